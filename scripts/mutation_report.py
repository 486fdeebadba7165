"""`make mutate`: mutation testing of the money-critical code with mutmut, and its report.

    python scripts/mutation_report.py --run [--children N] [--only GROUP ...]   # mutate, then report
    python scripts/mutation_report.py                                           # report the last run

mutmut (configured in pyproject's [tool.mutmut]: which files it mutates, which tests run)
plants one small change at a time in a copy of the code under mutants/ and runs the tests
that cover the changed function; a change no test notices "survives". SCOPE below names
what is run and reported, by mutant-name pattern (module paths, not a file list, so a
module moved within its package stays in scope). The report, tests/mutation/REPORT.md,
counts killed / survived / timeout / no tests per module, lists every survivor with its
diff, and takes the reasons some survivors cannot change behaviour from
tests/mutation/equivalent.toml.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "tests" / "mutation" / "REPORT.md"
EQUIVALENT = REPO / "tests" / "mutation" / "equivalent.toml"
TARGET = 0.90

# Group -> mutant-name patterns (mutmut names a mutant <module>.x_<function>__mutmut_<n>, or
# <module>.xǁ<Class>ǁ<method>__mutmut_<n>).
SCOPE: dict[str, list[str]] = {
    "domain": ["payments_svc.domain.*"],
    "auth": ["payments_svc.auth.*"],
    "signing": [
        "payments_svc.webhooks_signing.*",  # status callbacks (Standard Webhooks)
        "payments_svc.providers.*sandbox*",  # the sandbox's Stripe-style signatures
        "payments_svc.providers.*signing.*",  # VNPay's HMAC-SHA512
        "payments_svc.providers.*ǁparse_callback__mutmut_*",  # every provider's webhook verification
        "payments_svc.providers.*.x__signed_with__mutmut_*",  # Stripe's signature check per secret
    ],
    "job claims": [
        "payments_svc.repository.payment_jobs.*",
        "payments_svc.repository.deliveries.*",
        "payments_svc.jobs.*.x_lease_seconds__mutmut_*",
        "payments_svc.jobs.*.x_claim_transaction__mutmut_*",
        "payments_svc.jobs.*.x_run_items__mutmut_*",
        "payments_svc.jobs.*.x_settle__mutmut_*",
    ],
    "repository": ["payments_svc.repository.*"],
    "service": ["payments_svc.service.*"],
}

# mutmut's exit codes -> the report's columns (mutmut.stats.status_by_exit_code).
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", 24: "timeout",
          -24: "timeout", 152: "timeout", 255: "timeout", None: "not run", 34: "skipped"}
COLUMNS = ("killed", "timeout", "survived", "no tests", "outside", "equivalent", "other", "not run")


def group_of(name: str) -> str | None:
    """The first group whose patterns match (job claims' repository modules before repository)."""
    for group, patterns in SCOPE.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return group
    return None


def module_of(name: str) -> str:
    for marker in (".xǁ", ".x_"):
        if marker in name:
            return name.split(marker, 1)[0]
    return name.rsplit(".", 1)[0]


def load_results() -> dict[str, int | None]:
    """Every mutant mutmut made, with its exit code (None: not run yet)."""
    results: dict[str, int | None] = {}
    for meta in sorted((REPO / "mutants").rglob("*.py.meta")):
        results.update(json.loads(meta.read_text())["exit_code_by_key"])
    return results


def load_equivalent() -> dict[str, tuple[str, str]]:
    """Mutant name (or pattern) -> (kind, why): "equivalent" (cannot change behaviour) or
    "outside" (changes behaviour that only tests outside the fast subset can see, e.g. on MariaDB)."""
    if not EQUIVALENT.exists():
        return {}
    entries = tomllib.loads(EQUIVALENT.read_text())["equivalent"]
    return {e["mutant"]: (e.get("kind", "equivalent"), e["why"]) for e in entries}


def equivalent_reason(name: str, equivalent: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    if name in equivalent:
        return equivalent[name]
    return next((entry for pattern, entry in equivalent.items() if fnmatch.fnmatchcase(name, pattern)), None)


def diff_of(name: str) -> str:
    """The mutant's change as a diff, from mutmut's own files (run in the repository)."""
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant
    except ImportError:
        return ""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        lines = get_diff_for_mutant(name).splitlines()
    except Exception as exc:  # a stale mutants/ copy: say so in the report rather than fail it
        return f"(no diff: {type(exc).__name__})"
    finally:
        os.chdir(cwd)
    return "\n".join(line for line in lines[2:] if line.startswith(("+", "-")))


PLANTED = REPO / "mutants" / "planted.json"


def check_planted() -> None:
    """Plants each of tests/mutation/planted.py's bugs (which mutmut cannot make) and records
    whether its tests caught it (failed)."""
    sys.path.insert(0, str(REPO))
    from tests.mutation.planted import BUGS

    caught = {}
    for bug, (_, tests) in BUGS.items():
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.mutation.planted",
                                "-m", "not mysql", *tests], cwd=REPO, env={**os.environ, "PLANTED_BUG": bug},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caught[bug] = {"tests": " ".join(tests), "caught": code == 1}
    PLANTED.parent.mkdir(exist_ok=True)
    PLANTED.write_text(json.dumps(caught, indent=1))


def write_report() -> dict[str, Counter]:
    results = load_results()
    equivalent = load_equivalent()
    by_module: dict[tuple[str, str], Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    explained: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, code in sorted(results.items()):
        group = group_of(name)
        if group is None:
            continue
        status = STATUS.get(code, "other")
        entry = equivalent_reason(name, equivalent) if status in ("survived", "no tests") else None
        if entry:
            status, why = entry
            explained[status].append((name, why))
        elif status in ("survived", "no tests"):
            survivors[module_of(name)].append(name)
        by_module[(group, module_of(name))][status] += 1

    lines = [
        "# Mutation testing report",
        "",
        f"Written by `make mutate` (scripts/mutation_report.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with mutmut;",
        "scope and test subset: the script's SCOPE and pyproject's `[tool.mutmut]`.",
        "Score = (killed + timeout) / (mutants run − equivalent); target ≥ 90 % per module.",
        "A survivor is a change no test noticed: kill it with a test, or explain it in",
        "tests/mutation/equivalent.toml: *equivalent* (cannot change behaviour; left out of the score) or",
        "*outside* (a change only tests outside the fast subset can see, e.g. on MariaDB; still counted as not killed).",
        "*not run*: mutants the last run did not reach (`make mutate` resumes with them).",
        "",
        "| group | module | " + " | ".join(COLUMNS) + " | score |",
        "|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    totals: dict[str, Counter] = defaultdict(Counter)
    for (group, module), counts in sorted(by_module.items(), key=lambda kv: (list(SCOPE).index(kv[0][0]), kv[0][1])):
        totals[group].update(counts)
        lines.append(f"| {group} | {module} | " + " | ".join(str(counts[c]) for c in COLUMNS) + f" | {score(counts)} |")
    lines += ["", "| group | " + " | ".join(COLUMNS) + " | score |", "|---|" + "---|" * len(COLUMNS) + "---|"]
    for group in SCOPE:
        if group in totals:
            lines.append(f"| {group} | " + " | ".join(str(totals[group][c]) for c in COLUMNS) + f" | {score(totals[group])} |")

    lines += ["", "## Survivors not yet killed or explained", ""]
    if not survivors:
        lines.append("None.")
    for module, names in sorted(survivors.items()):
        lines += [f"### {module}", ""]
        for name in names:
            lines += [f"- `{name}` ({STATUS.get(results[name], 'other')})", "", "  ```diff"]
            lines += ["  " + line for line in diff_of(name).splitlines()] + ["  ```", ""]
    lines += ["## Bugs planted by hand", "",
              "mutmut mutates inside functions only, so module-level tables and statements (the transition",
              "table, the conditional UPDATE) and multi-token bugs are planted by tests/mutation/planted.py:", ""]
    planted = json.loads(PLANTED.read_text()) if PLANTED.exists() else {}
    lines += [f"- `{bug}`: {'caught' if r['caught'] else '**NOT caught**'} by `{r['tests']}`" for bug, r in planted.items()]
    lines += ["" if planted else "Not checked yet (`make mutate` checks them).", ""]
    lines += ["## Equivalent mutants (cannot change behaviour)", ""]
    lines += [f"- `{name}`: {why}" for name, why in explained["equivalent"]] or ["None."]
    lines += ["", "## Survivors only tests outside the fast subset can kill", ""]
    lines += [f"- `{name}`: {why}" for name, why in explained["outside"]] or ["None."]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    return totals


def score(counts: Counter) -> str:
    run = sum(counts[c] for c in COLUMNS if c not in ("not run", "equivalent"))
    if not run:
        return "–"
    return f"{100 * (counts['killed'] + counts['timeout']) / run:.1f} %"


def run_mutmut(children: int, groups: list[str], match: list[str], survivors_only: bool = False) -> int:
    """Runs the groups' mutants. After a first run, only those without a verdict and the
    survivors are run again (mutmut reruns every mutant it is named), so an interrupted
    run resumes and new tests get their chance at the survivors."""
    patterns = [p for g in groups for p in SCOPE[g]]
    done = load_results()
    equivalent = load_equivalent()
    if done:
        patterns = [name for name, code in done.items()
                    if group_of(name) in groups
                    and STATUS.get(code) in (("survived", "no tests") if survivors_only else ("not run", "survived", "no tests"))
                    and (not match or any(fnmatch.fnmatchcase(name, m) for m in match))
                    and equivalent_reason(name, equivalent) is None]
        if not patterns:
            print("every mutant of these groups has a verdict; delete mutants/ to start afresh")
            return 0
    mutmut = Path(sys.executable).with_name("mutmut")
    return subprocess.call([str(mutmut), "run", "--max-children", str(children), *patterns], cwd=REPO)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="run mutmut first (else only write the report)")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--only", nargs="+", choices=list(SCOPE), default=list(SCOPE), metavar="GROUP",
                        help=f"groups to run: {', '.join(SCOPE)}")
    parser.add_argument("--match", nargs="+", default=[], metavar="PATTERN",
                        help="with --run after a first run: only mutants whose name matches, e.g. 'payments_svc.repository.payments.*'")
    parser.add_argument("--survivors", action="store_true",
                        help="with --run after a first run: only the survivors (after adding tests that should kill them)")
    args = parser.parse_args()
    if args.run:
        check_planted()
        code = run_mutmut(args.children, args.only, args.match, args.survivors)
        if code != 0:
            print(f"mutmut run exited {code}; the report shows what it finished", file=sys.stderr)
    totals = write_report()
    for group, counts in totals.items():
        print(f"{group}: {score(counts)} ({', '.join(f'{counts[c]} {c}' for c in COLUMNS if counts[c])})")
    print(f"report: {REPORT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
