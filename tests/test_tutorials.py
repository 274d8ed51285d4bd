"""Every notebook in tutorials/ runs top to bottom without an error, and its committed
text outputs are what the current code prints (temporary paths and timings aside).

Needs nbclient, nbformat and ipykernel (in the test extra). Notebooks that take the
PyTorch port when torch is installed are compared only when it is (else only run).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the tutorials need nbformat (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="the tutorials need nbclient (pip install -e '.[test]')")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
HAS_TORCH = importlib.util.find_spec("torch") is not None
VOLATILE = [(re.compile(r"/tmp/[^\s'\"]+|/var/folders/[^\s'\"]+"), "<tmp>"),
            (re.compile(r"\(\d+\.\d+s\)"), "(<time>)"),
            (re.compile(r"\[IPKernelApp\][^\n]*\n?"), ""),
            # rounding-level differences (another machine's BLAS) and the path Hypothesis
            # takes while shrinking (its version) are not the code's output
            (re.compile(r"\d\.\d+e-(1\d|[2-9]\d)"), "<tiny>"),
            (re.compile(r"\n  preset=[^\n]*"), "\n  <shrunk case>"),
            (re.compile(r"(first divergent tensor: \S+: \w+):[^\n]*"), r"\1"),
            (re.compile(r"\(\d+ tensor\(s\) differ in that case; \d+ cases run\)"), "(<counts>)")]


def text_outputs(nb) -> list[str]:
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                parts.append(o.get("text", ""))
            elif o.get("output_type") in ("execute_result", "display_data"):
                parts.append(o.get("data", {}).get("text/plain", ""))
            elif o.get("output_type") == "error":
                parts.append(f"ERROR {o.get('ename')}: {o.get('evalue')}")
        text = "".join(parts)
        for pattern, repl in VOLATILE:
            text = pattern.sub(repl, text)
        out.append(text)
    return out


def test_there_are_notebooks():
    assert NOTEBOOKS, "tutorials/ holds no numbered notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_matches_its_committed_outputs(path, tmp_path, monkeypatch):
    committed = nbformat.read(path, as_version=4)
    assert not any(o.get("output_type") == "error" for c in committed.cells if c.cell_type == "code"
                   for o in c.get("outputs", [])), f"{path.name} was committed with an error output"
    fresh = nbformat.read(path, as_version=4)
    monkeypatch.setenv("TMPDIR", str(tmp_path))     # the kernel's temporary folders: removed by pytest
    client = nbclient.NotebookClient(fresh, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()                       # raises CellExecutionError, naming the cell, on any error
    uses_torch = "torch_port" in path.read_text()
    if uses_torch and not HAS_TORCH:
        pytest.skip(f"{path.name} ran; its outputs were made with torch installed, so they are not compared")
    for i, (old, new) in enumerate(zip(text_outputs(committed), text_outputs(fresh))):
        assert old == new, f"{path.name}, code cell {i}: the committed output is not what the code prints now"
