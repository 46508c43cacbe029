"""Lines of `ovit_ray/orchestration/` at two commits, per sub-package, and who wrote today's lines.

Issue 23 asked for orchestration "visibly smaller for the same behaviour" than at 6834ac9. Later issues
(24-27) added behaviour to the same package, so a plain count mixes the two; `git blame` splits today's
lines by the commit that last wrote them: before the base, a commit of issues 24-27 (listed below by
hash, from `git log`), or the rest (issue 23's one experiment model and the clean-ups after it).

    python benchmarks/code_size.py                 # base 6834ac9 against HEAD
    python benchmarks/code_size.py --base REV --rev REV
"""

from __future__ import annotations

import argparse
import subprocess
from collections import Counter, defaultdict

PACKAGE = "ovit_ray/orchestration"
# Commits that implemented issues 24-27 (hostile input, comparisons, deployable models, GPU clusters).
LATER_ISSUES = frozenset(
    "da4047a d3f3f7c f105857 d37895a ee799e6 698434e a878095 055b85e 4938ce8 4ec8e8e 615e390 e841cb3 "
    "4af7d7d 457ad58 ff6df4e 67d7bbe 8aec695 e4d8afd".split()
)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def _files(rev: str) -> list[str]:
    return [f for f in _git("ls-tree", "-r", "--name-only", rev, PACKAGE).split() if f.endswith(".py")]


def _sub_package(path: str) -> str:
    parts = path.split("/")
    return parts[2] if len(parts) > 3 else "(top)"


def line_counts(rev: str) -> Counter[str]:
    """Lines per sub-package at `rev` (blank lines, comments and docstrings included)."""
    counts: Counter[str] = Counter()
    for path in _files(rev):
        counts[_sub_package(path)] += len(_git("show", f"{rev}:{path}").splitlines())
    return counts


def authorship(base: str, rev: str) -> dict[str, Counter[str]]:
    """Lines at `rev` per sub-package, by the commit that last wrote them (whitespace changes ignored)."""
    before = set(_git("rev-list", base).split())
    by_package: dict[str, Counter[str]] = defaultdict(Counter)
    for path in _files(rev):
        for line in _git("blame", "--porcelain", "-w", rev, "--", path).splitlines():
            sha = line.split(" ", 1)[0]
            if len(sha) != 40 or line.startswith("\t") or len(line.split()) < 3:
                continue
            group = "before" if sha in before else "24-27" if sha[:7] in LATER_ISSUES else "23+"
            by_package[_sub_package(path)][group] += 1
    return by_package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="6834ac9")
    parser.add_argument("--rev", default="HEAD")
    args = parser.parse_args()
    old, new, by = line_counts(args.base), line_counts(args.rev), authorship(args.base, args.rev)
    print(f"{'package':<10}{args.base:>9}{args.rev:>9}   of which: before  23+  24-27")
    for name in sorted(set(old) | set(new)):
        b = by.get(name, Counter())
        print(f"{name:<10}{old[name]:>9}{new[name]:>9}   {b['before']:>14}{b['23+']:>5}{b['24-27']:>7}")
    total = sum(by.values(), Counter())
    print(
        f"{'total':<10}{sum(old.values()):>9}{sum(new.values()):>9}   {total['before']:>14}{total['23+']:>5}"
        f"{total['24-27']:>7}"
    )
    same = total["before"] + total["23+"]
    print(
        f"lines not written by issues 24-27: {same} ({same / sum(old.values()) - 1:+.1%} against {args.base})"
    )


if __name__ == "__main__":
    main()
