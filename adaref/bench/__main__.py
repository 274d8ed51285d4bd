"""Run a benchmark: ``python -m adaref.bench NAME [options]``.

Each ``NAME`` is a module of this package with a ``main(argv)`` function; the list
below is found by scanning the package, so adding a benchmark is adding a file.
"""
import importlib
import pkgutil
import sys

import adaref.bench as _pkg


USAGE = """usage: python -m adaref.bench NAME [options]

Benchmarks of adaref (times on a 2-core machine, default options):
"""


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(_pkg.__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        for name in names:
            module = importlib.import_module(f"adaref.bench.{name}")
            summary, runtime = getattr(module, "SUMMARY", ""), getattr(module, "RUNTIME", "")
            print(f"  {name:<11} {summary}" + (f" ({runtime})" if runtime else ""))
        print("\npython -m adaref.bench NAME --help gives each one's options. Each prints a table;"
              "\ncompare ratios measured in one run, since machines differ.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"adaref.bench: unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(f"adaref.bench.{name}").main(rest) or 0)


if __name__ == "__main__":
    from adaref.runtime import keep_freed_memory

    keep_freed_memory()          # a program may tune its allocator; `import adaref` does not
    sys.exit(main(sys.argv[1:]))
