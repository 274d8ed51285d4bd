"""Benchmarks: ``python -m adaref.bench NAME``; each prints a table, none is a test.

Each benchmark is a module ``adaref.bench.NAME`` with ``main(argv) -> int``, a one-line
``SUMMARY`` and ``RUNTIME`` (how long its default run takes on a 2-core machine), which
``python -m adaref.bench --help`` lists.
"""
import re


def plain(doc: str) -> str:
    """A docstring as ``--help`` text: reStructuredText markup removed (double
    backquotes, ``:mod:``/``:func:`` roles).

    >>> plain("``python -m x``: see :mod:`adaref.data.synthetic` and :func:`~a.b`")
    'python -m x: see adaref.data.synthetic and b'
    """
    doc = re.sub(r":(?:mod|func|class|meth|data|attr):`~?([^`]*)`",
                 lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).startswith((":func:`~", ":class:`~", ":meth:`~"))
                 else m.group(1), doc)
    return doc.replace("``", "")
