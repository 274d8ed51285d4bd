"""adaref.runtime: the allocator setting of adaref's programs, never of `import adaref`."""
import subprocess
import sys

import pytest

CODE = ("import adaref.runtime as r, adaref; before = r.describe(); print(before, '|', "
        "r.keep_freed_memory(), r.keep_freed_memory(), '|', r.describe())")


def _run(env_value=None):
    import os
    env = {k: v for k, v in os.environ.items() if k != "ADAREF_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["ADAREF_KEEP_FREED_MEMORY"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_applies_once_and_only_when_asked():
    out = _run()
    before, calls, after = [part.strip() for part in out.split("|")]
    assert before.endswith(": not requested")         # importing adaref changes nothing
    if calls == "True True":                           # glibc accepted both thresholds
        assert after.endswith(": on")
    else:                                              # another C library: a clean no
        assert calls == "False False" and after.endswith(": off")


def test_the_environment_turns_it_off():
    before, calls, after = [part.strip() for part in _run("0").split("|")]
    assert calls == "False False" and after.endswith(": off")


def test_the_programs_call_it_and_the_package_does_not():
    from pathlib import Path
    import adaref
    root = Path(adaref.__file__).parent
    assert "keep_freed_memory()" in (root / "train.py").read_text()
    assert "keep_freed_memory()" in (root / "bench" / "__main__.py").read_text()
    assert "runtime" not in (root / "__init__.py").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_is_released_only_where_it_is_kept():
    code = ("import adaref.runtime as r; a = r.release_freed_memory(); kept = r.keep_freed_memory(); "
            "import numpy as np; x = [np.ones(1 << 20) for _ in range(20)]; del x; "
            "print(a, kept, r.release_freed_memory() == kept)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False" and out[2] == "True"     # nothing before keep_freed_memory


def test_the_trainer_releases_freed_memory_before_evaluating():
    from pathlib import Path
    import adaref
    text = (Path(adaref.__file__).parent / "training" / "trainer.py").read_text()
    assert text.count("runtime.release_freed_memory()") == 2
