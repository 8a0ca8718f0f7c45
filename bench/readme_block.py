"""Rewrites a generated block of a markdown file: the text between a begin and an end marker.

The files: README.md (`quickstart_numbers.py --write_readme`), docs/benchmarks.md
(`quality.py --write_readme`) and docs/scale.md (`memory_plan.py --write_readme`); `text` is
the whole new block, markers included.
"""

from __future__ import annotations


def replace_block(path: str, begin: str, end: str, text: str) -> None:
    with open(path) as f:
        readme = f.read()
    if begin not in readme or end not in readme:
        raise SystemExit(f"{path}: markers {begin!r} / {end!r} not found")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + text + tail)
