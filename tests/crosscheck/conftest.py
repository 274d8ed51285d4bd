"""Cross-check of adaref against an independent PyTorch implementation (float64).

The whole folder needs PyTorch (the CPU wheel). Without it, collecting any file here
raises a skip, so the folder is reported as one skip with the
reason below (whether pytest is pointed at the repository, at ``tests/`` or at this
folder); the rest of the suite does not depend on torch.

In CI (the environment variable ``CI`` set, as ``.ci/run`` does) a missing torch is an
error, not a skip: CI must run these tests, and a skip there would pass unnoticed.

The skip is raised from the ``pytest_collect_file`` hook rather than at import time:
a skip raised while this conftest is imported works when pytest collects ``tests/``,
but crashes pytest's start-up when this folder is itself a command-line argument
(the conftest is then loaded before collection, where a skip cannot be reported).
"""
import os

import numpy as np
import pytest

REASON = ("tests/crosscheck compares adaref with an independent PyTorch implementation; "
          "install the CPU torch wheel to run it")


def _torch_error() -> str | None:
    """Why torch cannot be imported, or None."""
    try:
        import torch  # noqa: F401
    except ImportError as e:        # not installed, or installed but broken
        return f"{type(e).__name__}: {e}"
    return None


def pytest_collect_file(file_path, parent):
    error = _torch_error()
    if error is None:
        return
    if os.environ.get("CI"):                         # CI must run the folder: no skip
        pytest.fail(f"CI is set but torch cannot be imported ({error}); {REASON} (.ci/run installs it)",
                    pytrace=False)
    pytest.skip(f"{REASON} ({error})", allow_module_level=True)      # skips this whole folder


try:
    import torch
except ImportError:   # only reached when the hook above has skipped the folder
    torch = None
else:
    torch.set_num_threads(1)   # reproducible float64 reductions, no thread start-up cost


@pytest.fixture
def rng():
    return np.random.default_rng(20261129)
