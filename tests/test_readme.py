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


def test_five_line_example_runs_and_its_last_line_raises():
    lines = _python_blocks()[0].strip().splitlines()
    assert len(lines) <= 6  # the import line plus five
    namespace: dict = {}
    exec("\n".join(lines[:-1]), namespace)
    assert namespace["x"].grad.shape == (3,)
    with pytest.raises(adaref.GradcheckError, match=r"input 0 \(x\) at index \(0,\).*analytic 1, numeric 2"):
        exec(lines[-1], namespace)
