"""The end-to-end suite stays out of `make test` and can run on its own."""

from __future__ import annotations

import subprocess
import tomllib

from .envvars import REPO


def test_make_test_does_not_collect_the_e2e_suite():
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests"]
    assert not (REPO / "tests" / "e2e").exists()


def test_the_e2e_suite_has_its_own_conftest_and_runner():
    assert (REPO / "e2e" / "conftest.py").is_file() and (REPO / "e2e" / "__init__.py").is_file()
    assert list((REPO / "e2e").glob("test_*.py"))
    subprocess.run(["bash", "-n", str(REPO / "e2e" / "run.sh")], check=True)
    makefile = (REPO / "Makefile").read_text()
    assert "\ne2e:" in makefile and "e2e/run.sh" in makefile


def test_the_metric_names_of_the_guide_are_the_ones_the_e2e_suite_checks():
    """deployment.md's metrics (placeholders until the metrics land) and
    e2e/test_metrics.py's METRIC_FAMILIES are one list: rename both together."""
    import ast
    import re

    tree = ast.parse((REPO / "e2e" / "test_metrics.py").read_text())
    (families,) = [ast.literal_eval(n.value) for n in tree.body
                   if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "METRIC_FAMILIES"]
    documented = set(re.findall(r"`(payments_[a-z_]+)`", (REPO / "deployment.md").read_text()))
    assert documented == set(families)
