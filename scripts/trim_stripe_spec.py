"""Writes the part of Stripe's OpenAPI spec that tests/fakes/stripe_server.py validates against.

The fake checks every request the service sends against Stripe's published description of that
operation (its query and form parameters). Only the operations the fake serves are kept, and of
each only what a request is checked against (parameters and request body; responses are shaped
by fixtures3.json instead), so the repository carries ~100 kB instead of 4 MB and never reads
files outside itself.

    python scripts/trim_stripe_spec.py SOURCE_DIR

SOURCE_DIR holds spec3.json and fixtures3.json from github.com/stripe/openapi (openapi/, MIT
licence); the copy used is the commit of 2022-04-12 (info.version 2020-08-27). Run it again when
the fake serves a new operation.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "tests" / "fakes" / "stripe_openapi"
KEPT_FIELDS = ("operationId", "parameters", "requestBody")


def served_operations() -> list[tuple[str, str]]:
    sys.path.insert(0, str(REPO))
    from tests.fakes.stripe_server import SERVED_OPERATIONS

    return list(SERVED_OPERATIONS)


def trim(spec: dict, operations: list[tuple[str, str]]) -> dict:
    paths: dict[str, dict] = {}
    for method, path in operations:
        operation = spec["paths"][path][method]
        paths.setdefault(path, {})[method] = {k: operation[k] for k in KEPT_FIELDS if k in operation}
    return {
        "openapi": spec["openapi"],
        "info": {**spec["info"], "x-trimmed": "operations served by tests/fakes/stripe_server.py; see scripts/trim_stripe_spec.py"},
        "paths": paths,
    }


def main(source: str) -> None:
    source_dir = Path(source)
    spec = json.loads((source_dir / "spec3.json").read_text())
    TARGET.mkdir(parents=True, exist_ok=True)
    (TARGET / "spec3.json").write_text(json.dumps(trim(spec, served_operations()), indent=1, sort_keys=True) + "\n")
    shutil.copyfile(source_dir / "fixtures3.json", TARGET / "fixtures3.json")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
