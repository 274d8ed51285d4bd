"""What the README shows must run as shown."""
import re
from pathlib import Path

import pytest

import adaref

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_install_run_and_test_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = first_block.strip().splitlines()
    assert lines[0] == "python -m pip install -e . && python -m adaref.train --sample criteo"
    assert lines[1] == 'python -m pip install -e ".[test]" && python -m pytest'
    ci = (README.parent / ".ci" / "run").read_text()
    assert lines[1] in ci


def _block(containing: str) -> str:
    return next(b for b in _python_blocks() if containing in b)


def test_five_line_example_runs_and_its_last_line_raises():
    lines = _block("gradcheck").strip().splitlines()
    assert len(lines) <= 6  # the import line plus five
    namespace: dict = {}
    exec("\n".join(lines[:-1]), namespace)
    assert namespace["x"].grad.shape == (3,)
    with pytest.raises(adaref.GradcheckError, match=r"input 0 \(x\) at index \(0,\).*analytic 1, numeric 2"):
        exec(lines[-1], namespace)


def test_the_scoring_example_runs_on_a_trained_run(tmp_path, capsys):
    import contextlib
    import io

    from adaref.data.samples import sample_path
    from adaref.train import main

    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--sample", "criteo", "--out", str(tmp_path / "run"), "--quiet",
                     "--train.max_steps", "20"]) == 0
    code = _block("load_run").strip()
    assert len(code.splitlines()) <= 5
    run_dir = re.search(r'load_run\("([^"]+)"\)', code).group(1)
    code = code.replace(run_dir, str(tmp_path / "run")).replace("new_lines.txt", sample_path("criteo"))
    exec(code, {})
    assert 0.6 < float(capsys.readouterr().out.strip()) < 1.0
