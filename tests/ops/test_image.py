"""deploy/Dockerfile: a reproducible image (every package pinned by constraints.txt, which
covers every dependency within pyproject's ranges) with a HEALTHCHECK that works against
a real server, on its HTTP port and on its metrics port. No Docker is needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..support import ServerProcess, base_env, cli, free_port
from .envvars import REPO

DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, pinned = line.partition("==")
            assert sep and pinned.strip(), f"constraints.txt: {line!r} is not name==version"
            out[canonicalize_name(name)] = pinned.strip()
    return out


def test_constraints_pin_every_dependency_within_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in constraints.txt: run `make constraints`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), \
            f"constraints.txt pins {name}=={pinned[name]}, outside pyproject's {requirement.specifier}: run `make constraints`"


def test_the_image_and_make_install_use_the_constraints():
    assert re.search(r"^COPY .*constraints\.txt", DOCKERFILE, re.MULTILINE)
    assert "pip wheel --no-cache-dir --constraint constraints.txt" in DOCKERFILE
    assert "pip install --no-cache-dir --no-index /wheels/*.whl" in DOCKERFILE  # nothing but the pinned wheels
    makefile = (REPO / "Makefile").read_text()
    assert "-c constraints.txt -e '.[dev]'" in makefile and "$(STAMP): pyproject.toml constraints.txt" in makefile


def healthcheck_command() -> list[str]:
    match = re.search(r"^HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert match, "deploy/Dockerfile has no HEALTHCHECK ... CMD [...]"
    command = json.loads(match.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_healthcheck_probes_the_metrics_port_or_the_http_port(tmp_path):
    env = base_env(f"sqlite+aiosqlite:///{tmp_path / 'image.sqlite3'}", TEST_LOG_DIR=str(tmp_path))
    cli(env, "db", "migrate")
    metrics_port = free_port()
    server = ServerProcess(dict(env, PAYMENTS_METRICS_PORT=str(metrics_port))).start()
    try:
        def check(**probe_env: str) -> int:
            return subprocess.run(healthcheck_command(), env=base_env("unused", **probe_env), capture_output=True,
                                  timeout=30).returncode

        assert check(PAYMENTS_METRICS_PORT=str(metrics_port)) == 0
        assert check(HTTP_PORT=str(server.http_port)) == 0
        assert check(HTTP_PORT=str(server.http_port), PAYMENTS_METRICS_PORT="0") == 0  # "0": no metrics port
        assert check(PAYMENTS_METRICS_PORT=str(free_port())) != 0  # nothing listens there
    finally:
        assert server.stop() == 0, server.logs()
