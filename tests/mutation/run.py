"""`make mutate`: mutation testing of the ship/no-ship modules, one module at a time.

mutmut (configured in `[tool.mutmut]` of pyproject.toml) copies `src/` and the tests into
`mutants/`, runs the fast unit tests once to learn which tests reach which function, and then runs,
for each mutant, only the tests that reach the mutated function. This script runs it once per
module (so each module's figures and time are its own), then prints a table of the scores and the
diff of every surviving mutant. It exits 0 whatever the scores: the figures are for reading, and
the README keeps them.

    .venv/bin/python tests/mutation/run.py [--children N] [MODULE ...]

MODULE is a path under src/slipway such as `propose/gate_rules.py`; none means all of them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MUTMUT = Path(sys.executable).with_name("mutmut")
TARGET = 0.90
KILLED = {"killed", "timeout", "caught by type check"}


def modules() -> list[str]:
    """The modules `[tool.mutmut] only_mutate` names, as paths under src/slipway."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]
    return [path.removeprefix("src/slipway/") for path in config["only_mutate"]]


def dotted(module: str) -> str:
    """`propose/gate_rules.py` -> `slipway.propose.gate_rules`, the prefix of its mutant names."""
    return "slipway." + module.removesuffix(".py").replace("/", ".")


def statuses(prefix: str) -> dict[str, str]:
    """Every mutant of one module with its status, from `mutmut results --all true`."""
    out = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name.startswith(prefix + "."):
            found[name] = status
    return found


def run_module(module: str, children: int, log: Path) -> tuple[dict[str, str], float]:
    """Run mutmut on one module's mutants; returns their statuses and the seconds it took."""
    prefix = dotted(module)
    started = time.monotonic()
    with log.open("a") as out:
        subprocess.run(
            [str(MUTMUT), "run", "--max-children", str(children), prefix + ".*"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return statuses(prefix), time.monotonic() - started


def show(name: str) -> str:
    """mutmut's diff of one mutant against the original source."""
    return subprocess.run(
        [str(MUTMUT), "show", name], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="paths under src/slipway (default: all)")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ from the last run")
    args = parser.parse_args(argv)
    known = modules()
    chosen = args.modules or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        print(f"not a module of [tool.mutmut] only_mutate: {', '.join(unknown)}")
        print(f"fix: name one of {', '.join(known)}")
        return 2
    if not args.keep:
        # A fresh copy: the test-to-function map is learnt again from the tests as they are now.
        shutil.rmtree(REPO / "mutants", ignore_errors=True)
    (REPO / "mutants").mkdir(exist_ok=True)
    log = REPO / "mutants" / "run.log"
    rows, survivors = [], []
    for module in chosen:
        print(f"mutating {module} ...", flush=True)
        found, seconds = run_module(module, args.children, log)
        counts = {s: sum(1 for v in found.values() if v == s) for s in set(found.values())}
        killed = sum(counts.get(s, 0) for s in KILLED)
        score = killed / len(found) if found else 0.0
        rows.append((module, len(found), counts, killed, score, seconds))
        survivors += [(module, n) for n, s in sorted(found.items()) if s not in KILLED]
    print()
    print("| module | mutants | killed | survived | no tests | timeout | score | ≥ 90% | time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for module, total, counts, killed, score, seconds in rows:
        other = total - killed - counts.get("survived", 0) - counts.get("no tests", 0)
        survived = counts.get("survived", 0) + other  # suspicious, segfault, not checked
        print(
            f"| {module} | {total} | {killed} | {survived} | {counts.get('no tests', 0)}"
            f" | {counts.get('timeout', 0)} | {score:.1%} | {'yes' if score >= TARGET else 'no'}"
            f" | {seconds:.0f} s |"
        )
    if survivors:
        print(f"\nSurviving mutants ({len(survivors)}; `no tests`: no fast test reaches them):")
    for _module, name in survivors:
        print()
        print(show(name))
    print(f"\nmutmut's own output: {log.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
