"""CI runs the torch-based cross-check tests (tests/crosscheck) or fails; a machine
without torch outside CI skips them with a printed reason."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_folder_without_torch(tmp_path, ci: bool, error: str):
    """pytest on tests/crosscheck in a subprocess where ``import torch`` raises ``error``."""
    fake = tmp_path / "blocked" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise {error}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), str(ROOT)])
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/crosscheck"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("error", ["ModuleNotFoundError(\"No module named 'torch'\")",
                                   "ImportError('libtorch_cpu.so: cannot open shared object file')"])
def test_without_torch_the_folder_is_skipped_with_its_reason_outside_ci(tmp_path, error):
    out = run_folder_without_torch(tmp_path, ci=False, error=error)
    assert out.returncode == 5, out.stdout + out.stderr               # nothing ran, nothing failed
    assert "1 skipped" in out.stdout and "SKIPPED" in out.stdout, out.stdout
    assert "install the CPU torch wheel to run it" in out.stdout and error.split("(")[0] in out.stdout


@pytest.mark.parametrize("error", ["ModuleNotFoundError(\"No module named 'torch'\")",
                                   "ImportError('libtorch_cpu.so: cannot open shared object file')"])
def test_without_torch_ci_fails(tmp_path, error):
    out = run_folder_without_torch(tmp_path, ci=True, error=error)
    assert out.returncode not in (0, 5), out.stdout + out.stderr
    assert "CI is set but torch cannot be imported" in out.stdout and "skipped" not in out.stdout, out.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("fails, message", [
    ("pip", ".ci/run: torch 2.13.0+cpu could not be installed; tests/crosscheck cannot run; failing"),
    ("import", ".ci/run: torch is installed but cannot be imported; tests/crosscheck cannot run; failing"),
])
def test_ci_run_fails_when_torch_cannot_be_installed(tmp_path, fails, message):
    """.ci/run with a stand-in `python` whose torch install (or import) fails: it stops
    with a message and a non-zero status before running any test."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fake = bin_dir / "python"
    fake.write_text("#!/bin/sh\n"
                    f"echo \"$*\" >> '{log}'\n"
                    f"case \"$*\" in *'pip install'*torch*) [ {fails} = pip ] && exit 1; exit 0 ;; esac\n"
                    f"case \"$*\" in *'import torch'*) [ {fails} = import ] && exit 1; exit 0 ;; esac\n"
                    "exit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and message in out.stderr, out.stdout + out.stderr
    assert "pytest" not in log.read_text()                   # no test run that could pass without torch
