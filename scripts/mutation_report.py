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
# The verdicts, kept in the repository (mutants/ is not): each file's mutants' exit codes
# with its functions' hashes, so that a fresh clone's run tests only the mutants of
# functions changed since (mutmut keeps a verdict while its function's hash is unchanged).
RESULTS = REPO / "tests" / "mutation" / "results.json"
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
COLUMNS = ("killed", "killed elsewhere", "timeout", "survived", "no tests", "outside", "equivalent", "other", "not run")
KILLED = ("killed", "killed elsewhere", "timeout")


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
    """Every mutant mutmut made, with its exit code (None: not run yet); on a fresh clone
    (no mutants/ yet), the verdicts kept in RESULTS."""
    results: dict[str, int | None] = {}
    metas = sorted((REPO / "mutants").rglob("*.py.meta"))
    if not metas and RESULTS.exists():
        for data in json.loads(RESULTS.read_text()).values():
            results.update(data["exit_code_by_key"])
    for meta in metas:
        results.update(json.loads(meta.read_text())["exit_code_by_key"])
    return results


def save_results() -> None:
    kept = {}
    for meta in sorted((REPO / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes = {name: code for name, code in data["exit_code_by_key"].items() if code is not None and group_of(name)}
        if codes:
            kept[meta.relative_to(REPO / "mutants").as_posix().removesuffix(".meta")] = {
                "hash_by_function_name": data["hash_by_function_name"], "exit_code_by_key": codes}
    RESULTS.write_text(json.dumps(kept, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


# mutmut's own first step (its `run` begins with it): the mutants of the current code, each
# file's verdicts merged by function hash. Run alone, so that the mutants still to test are
# known by name before the run.
_GENERATE = """
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths, set_mutant_under_test
set_mutant_under_test("mutant_generation")
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants({children})
"""


def generate_mutants(children: int) -> None:
    """Makes mutants/ for the current code; on a fresh clone, with RESULTS' verdicts first."""
    if RESULTS.exists():
        for path, data in json.loads(RESULTS.read_text()).items():
            meta = REPO / "mutants" / (path + ".meta")
            if not meta.exists():
                meta.parent.mkdir(parents=True, exist_ok=True)
                meta.write_text(json.dumps({**data, "type_check_error_by_key": {}, "durations_by_key": {},
                                            "estimated_durations_by_key": {}}))
    subprocess.run([sys.executable, "-c", _GENERATE.format(children=children)], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)


def load_equivalent() -> dict[str, dict]:
    """Mutant name (or pattern) -> its entry: kind "equivalent" (cannot change behaviour) or
    "outside" (changes behaviour only tests outside the fast subset can see, e.g. on MariaDB;
    with `killed_by`, the pytest arguments of those tests, which check_killed_elsewhere runs)."""
    if not EQUIVALENT.exists():
        return {}
    entries = tomllib.loads(EQUIVALENT.read_text())["equivalent"]
    return {e["mutant"]: {"kind": e.get("kind", "equivalent"), "why": e["why"], "killed_by": e.get("killed_by", [])}
            for e in entries}


def equivalent_reason(name: str, equivalent: dict[str, dict]) -> dict | None:
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
KILLED_ELSEWHERE = REPO / "mutants" / "killed_elsewhere.json"


def _pytest(args: list[str], *, cwd: Path, **env: str) -> int:
    """pytest's exit code for the tests in args (1: some failed, i.e. the planted bug was caught)."""
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd,
                           env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def check_planted() -> None:
    """Plants each of tests/mutation/planted.py's bugs (which mutmut cannot make) and records
    whether its tests caught it (failed)."""
    sys.path.insert(0, str(REPO))
    from tests.mutation.planted import BUGS

    caught = {}
    for bug, (_, tests) in BUGS.items():
        code = _pytest(["-p", "tests.mutation.planted", "-m", "not mysql", *tests], cwd=REPO, PLANTED_BUG=bug)
        caught[bug] = {"tests": " ".join(tests), "caught": code == 1}
    PLANTED.parent.mkdir(exist_ok=True)
    PLANTED.write_text(json.dumps(caught, indent=1))


def check_killed_elsewhere() -> None:
    """Runs each *outside* entry's `killed_by` tests (e.g. the MariaDB ones, which the fast
    subset leaves out) with each of its surviving mutants active, the way mutmut runs its own
    (in mutants/, the mutant named in MUTANT_UNDER_TEST); the tests failing is a kill."""
    equivalent = load_equivalent()
    checked = {}
    for name, code in sorted(load_results().items()):
        entry = equivalent_reason(name, equivalent) if STATUS.get(code) in ("survived", "no tests") and group_of(name) else None
        if not entry or not entry["killed_by"]:
            continue
        code = _pytest(["-x", "-p", "no:randomly", *entry["killed_by"]], cwd=REPO / "mutants",
                       MUTANT_UNDER_TEST=name, PYTHONPATH=str(REPO / "mutants" / "src"))
        # pytest: 1 = tests failed (killed), 0 = passed (the claim is wrong), else it could not run them
        checked[name] = {"tests": " ".join(entry["killed_by"]), "exit_code": code}
        print(f"{name}: {'killed' if code == 1 else f'NOT killed (pytest exit {code})'} by {checked[name]['tests']}")
    KILLED_ELSEWHERE.write_text(json.dumps(checked, indent=1, ensure_ascii=False))


def write_report() -> dict[str, Counter]:
    results = load_results()
    equivalent = load_equivalent()
    elsewhere = json.loads(KILLED_ELSEWHERE.read_text()) if KILLED_ELSEWHERE.exists() else {}
    by_module: dict[tuple[str, str], Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    explained: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, code in sorted(results.items()):
        group = group_of(name)
        if group is None:
            continue
        status = STATUS.get(code, "other")
        entry = equivalent_reason(name, equivalent) if status in ("survived", "no tests", "not run") else None
        if status == "not run" and entry and entry["kind"] != "equivalent":
            entry = None  # an outside entry explains a survivor; a mutant not run yet has no verdict to explain
        if entry and entry["killed_by"]:
            check = elsewhere.get(name)
            if check is None or check["exit_code"] not in (0, 1):  # not checked (yet): only explained
                status = "outside"
                note = "not run against it yet" if check is None else f"could not run: pytest exit {check['exit_code']}"
                explained[status].append((name, f"{entry['why']} (its killed_by tests {note})"))
            elif check["exit_code"] == 1:
                status = "killed elsewhere"
                explained[status].append((name, f"`{check['tests']}`: {entry['why']}"))
            else:  # the named tests passed with the mutant active: a plain survivor
                survivors[module_of(name)].append(name)
        elif entry:
            status = entry["kind"]
            explained[status].append((name, entry["why"]))
        elif status in ("survived", "no tests"):
            survivors[module_of(name)].append(name)
        by_module[(group, module_of(name))][status] += 1

    lines = [
        "# Mutation testing report",
        "",
        f"Written by `make mutate` (scripts/mutation_report.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with mutmut,",
        f"in a checkout of commit `{_head()}`; verdicts of functions unchanged since earlier runs are kept from them",
        "(tests/mutation/results.json);",
        "scope and test subset: the script's SCOPE and pyproject's `[tool.mutmut]`.",
        "Score = (killed + timeout) / (mutants run − equivalent); target ≥ 90 % per module.",
        "A survivor is a change no test noticed: kill it with a test, or explain it in",
        "tests/mutation/equivalent.toml: *equivalent* (cannot change behaviour; left out of the score) or",
        "*outside* (a change only tests outside the fast subset can see, e.g. on MariaDB; still counted as not killed).",
        "*killed elsewhere*: an outside entry whose `killed_by` tests (MariaDB's, say) were run with the",
        "mutant active and failed; counted as killed.",
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
    untested: Counter = Counter()  # function -> its mutants no test in the subset reaches
    for module, names in sorted(survivors.items()):
        survived = [name for name in names if STATUS.get(results[name]) == "survived"]
        untested.update(name.split("__mutmut_")[0] for name in names if STATUS.get(results[name]) != "survived")
        if survived:
            lines += [f"### {module}", ""]
        for name in survived:
            refuted = f" (its killed_by tests passed with it: `{elsewhere[name]['tests']}`)" if name in elsewhere else ""
            lines += [f"- `{name}`{refuted}", "", "  ```diff"]
            lines += ["  " + line for line in diff_of(name).splitlines()] + ["  ```", ""]
    if not survivors:
        lines.append("None.")
    lines += ["## Functions no test in the subset reaches (their mutants: *no tests*)", ""]
    lines += [f"- `{function}`: {count}" for function, count in sorted(untested.items())] or ["None."]
    lines.append("")
    lines += ["## Bugs planted by hand", "",
              "mutmut mutates inside functions only, so module-level tables and statements (the transition",
              "table, the conditional UPDATE) and multi-token bugs are planted by tests/mutation/planted.py:", ""]
    planted = json.loads(PLANTED.read_text()) if PLANTED.exists() else {}
    lines += [f"- `{bug}`: {'caught' if r['caught'] else '**NOT caught**'} by `{r['tests']}`" for bug, r in planted.items()]
    lines += ["" if planted else "Not checked yet (`make mutate` checks them).", ""]
    # With each reason its mutant's diff: mutmut numbers a function's mutants afresh when the
    # function changes, so a reader can see that the reason still fits the change it names.
    for kind, title in (("killed elsewhere", "Killed by tests outside the fast subset (run with the mutant active)"),
                        ("equivalent", "Equivalent mutants (cannot change behaviour)"),
                        ("outside", "Survivors only tests outside the fast subset can kill")):
        lines += [f"## {title}", ""]
        for name, why in explained[kind]:
            lines += [f"- `{name}`: {why}", "", "  ```diff"]
            lines += ["  " + line for line in diff_of(name).splitlines()] + ["  ```", ""]
        if not explained[kind]:
            lines += ["None.", ""]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    return totals


def _head() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return head.stdout.strip() or "unknown"


def score(counts: Counter) -> str:
    run = sum(counts[c] for c in COLUMNS if c not in ("not run", "equivalent"))
    if not run:
        return "–"
    return f"{100 * sum(counts[c] for c in KILLED) / run:.1f} %"


def run_mutmut(children: int, groups: list[str], match: list[str], survivors_only: bool = False) -> int:
    """Runs the groups' mutants that have no verdict yet, and the survivors (mutmut reruns
    every mutant it is named), so an interrupted run resumes and new tests get their
    chance at the survivors."""
    equivalent = load_equivalent()
    names = [name for name, code in load_results().items()
             if group_of(name) in groups
             and STATUS.get(code) in (("survived", "no tests") if survivors_only else ("not run", "survived", "no tests"))
             and (not match or any(fnmatch.fnmatchcase(name, m) for m in match))
             and equivalent_reason(name, equivalent) is None]
    if not names:
        print("every mutant of these groups has a verdict; delete mutants/ and tests/mutation/results.json to start afresh")
        return 0
    mutmut = Path(sys.executable).with_name("mutmut")
    return subprocess.call([str(mutmut), "run", "--max-children", str(children), *names], cwd=REPO)


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
    parser.add_argument("--check-elsewhere", action="store_true",
                        help="only run the outside entries' killed_by tests against their mutants (after a run), then report")
    args = parser.parse_args()
    if args.run:
        check_planted()
        generate_mutants(args.children)
        code = run_mutmut(args.children, args.only, args.match, args.survivors)
        if code != 0:
            print(f"mutmut run exited {code}; the report shows what it finished", file=sys.stderr)
        save_results()
    if args.run or args.check_elsewhere:
        check_killed_elsewhere()
    totals = write_report()
    for group, counts in totals.items():
        print(f"{group}: {score(counts)} ({', '.join(f'{counts[c]} {c}' for c in COLUMNS if counts[c])})")
    print(f"report: {REPORT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
