"""Checks kchaos's KCIDB exports of recorded runs with KCIDB's own library, kcidb-io.

Usage: kcidb_check.py KNOWN_ISSUES RESULTS_JSON FROM_DIR FROM_DB [RESULTS_JSON FROM_DIR FROM_DB]...

For each run: RESULTS_JSON is its results.json, FROM_DIR and FROM_DB the exports of the
same run from that directory and from its results.db. Each must validate against
KCIDB's schema v5.3; both must be the same bytes; merged by kcidb-io and deduplicated
they must be one export's objects, and kcidb-io must count as many tests as the run
has cells and checks, as many sub-tests (kchaos.<scenario>.<check>) as checks, and as
many incidents as failures the entries of KNOWN_ISSUES (the file the exports were
triaged with; here only `scenario` globs and `verdict` lists) describe. The validator is first shown
broken copies and must refuse each, and the runs together must cover every verdict
but skip, with checks and incidents, so this cannot pass by checking nothing.
"""

import copy
import fnmatch
import json
import sys
import tomllib

import jsonschema
from kcidb_io import schema

V = schema.V5_3
FAILURES = {"fail", "crash", "hang"}
NEEDED = {"pass", "fail", "crash", "hang", "error"}


def fail(message):
    print(f"check-kcidb: {message}", file=sys.stderr)
    sys.exit(1)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def validate(path, data):
    if V.get_exactly_compatible(data) is not V:
        fail(f"{path}: not schema {V}: {data.get('version')}")
    try:
        V.validate_exactly(data)
    except jsonschema.exceptions.ValidationError as e:
        fail(f"{path}: not valid KCIDB {V}: {e.message} at {list(e.absolute_path)}")


def known_rules(path):
    """(scenario glob, verdicts) per entry: what this check can match independently."""
    with open(path, "rb") as f:
        entries = tomllib.load(f).get("issue", [])
    rules = []
    for e in entries:
        if set(e) - {"id", "link", "scenario", "verdict", "note"}:
            fail(f"{path}: {e['id']}: only scenario and verdict are matched here")
        rules.append((e.get("scenario", "*"), set(e.get("verdict", FAILURES))))
    return rules


def is_known(cell, rules):
    return cell["verdict"] in FAILURES and any(
        fnmatch.fnmatchcase(cell["scenario"], glob) and cell["verdict"] in verdicts
        for glob, verdicts in rules
    )


def validator_bites(sample):
    """The validator must refuse what KCIDB cannot take."""
    breaks = [
        ("a status KCIDB does not know", lambda t: t.update(status="CRASH")),
        ("a null", lambda t: t.update(comment=None)),
        ("a test path with a space", lambda t: t.update(path="kchaos.a b")),
        ("a start time that is no time", lambda t: t.update(start_time="soon")),
        ("a log excerpt over 16384 characters", lambda t: t.update(log_excerpt="x" * 16385)),
        ("an id without its origin", lambda t: t.update(id="no-origin")),
        ("a link that is no URI", lambda t: t.update(log_url="https://x/a b")),
    ]
    for what, mutate in breaks:
        broken = copy.deepcopy(sample)
        mutate(broken["tests"][0])
        if V.is_valid_exactly(broken):
            fail(f"kcidb-io accepted {what}")


def check_run(rules, results_path, from_dir, from_db):
    results = load(results_path)
    a, b = load(from_dir), load(from_db)
    validate(from_dir, a)
    validate(from_db, b)
    with open(from_dir, "rb") as f1, open(from_db, "rb") as f2:
        if f1.read() != f2.read():
            fail(f"{from_dir} and {from_db}: one run, two different exports")
    cells = results["cells"]
    checks = sum(len(c.get("checks") or []) for c in cells)
    known = sum(1 for c in cells if is_known(c, rules))
    merged = V.merge(a, [b])
    if V.count(merged) != 2 * V.count(a):
        fail(f"{from_dir}: kcidb-io merged {V.count(merged)} objects, not 2 x {V.count(a)}")
    once = V.dedup(merged)
    if V.cmp(once, a) != 0:
        fail(f"{from_dir}: two exports of one run do not merge to its objects")
    ids = V.get_ids(once)
    tests = once.get("tests", [])
    subtests = [t for t in tests if t["path"].count(".") == 2]
    counted = {
        "tests": (len(ids.get("tests", [])), len(cells) + checks),
        "sub-tests": (len(subtests), checks),
        "cell tests": (len(tests) - len(subtests), len(cells)),
        "incidents": (len(ids.get("incidents", [])), known),
    }
    for what, (got, want) in counted.items():
        if got != want:
            fail(f"{from_dir}: kcidb-io counts {got} {what}, the run has {want}")
    verdicts = {c["verdict"] for c in cells}
    print(
        f"{results_path}: valid KCIDB {V}; merged twice and deduplicated: "
        f"{len(ids.get('tests', []))} tests = {len(cells)} cells + {len(subtests)} checks, "
        f"{len(ids.get('incidents', []))} incidents; verdicts {', '.join(sorted(verdicts))}"
    )
    return a, verdicts, checks, known


def main(args):
    if len(args) < 4 or (len(args) - 1) % 3:
        fail("usage: kcidb_check.py KNOWN_ISSUES RESULTS_JSON FROM_DIR FROM_DB [...]")
    rules = known_rules(args[0])
    runs = [check_run(rules, *args[i : i + 3]) for i in range(1, len(args), 3)]
    sample = next((a for a, _, _, _ in runs if a.get("tests")), None)
    if sample is None:
        fail("no test in any export")
    validator_bites(sample)
    verdicts = set().union(*(v for _, v, _, _ in runs))
    if not NEEDED <= verdicts:
        fail(f"the recorded runs lack verdicts {sorted(NEEDED - verdicts)}")
    checks = sum(c for _, _, c, _ in runs)
    incidents = sum(k for _, _, _, k in runs)
    if not checks or not incidents:
        fail(f"the recorded runs have {checks} checks and {incidents} incidents")
    print(
        f"check-kcidb: {len(runs)} recorded runs valid against KCIDB {V} (kcidb-io), "
        f"{checks} checks as sub-tests, {incidents} incidents, verdicts {', '.join(sorted(verdicts))}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
