"""python -m adaref.experiments sets one OpenBLAS thread (adaref.runtime.blas_threads),
unless the user set OPENBLAS_NUM_THREADS; `import adaref` never does."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

CODE = "import adaref, numpy; from adaref.runtime import blas_threads as b; print(b(), b(1), b())"


def _run(**env):
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", CODE], env={**base, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return [None if v == "None" else int(v) for v in out]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")
def test_blas_threads_sets_one_thread_unless_the_user_chose():
    before, set_, after = _run()
    if before is None:                                  # no OpenBLAS found: a clean no
        assert set_ is None and after is None
        return
    assert set_ == after == 1
    assert _run(OPENBLAS_NUM_THREADS="2")[1] == min(2, os.cpu_count() or 2)   # the user's choice wins


def test_the_experiments_program_calls_it():
    import adaref
    root = Path(adaref.__file__).parent
    assert "blas_threads(1)" in (root / "experiments" / "__main__.py").read_text()
    assert "blas_threads" not in (root / "__init__.py").read_text()
