"""Which environment variables the code reads, found in src/ (the source of truth),
and which ones deployment.md documents. Shared by the doc test and the manifest test.

Found in the code:
* a call whose first argument is the environment (`env_value(environ, "NAME")`,
  `_int(env, "NAME")`, ... : every settings helper of config.py and of the
  providers' settings modules has that shape) and that names a variable;
* `environ.get("NAME")` / `os.getenv("NAME")` / `environ["NAME"]` on anything called
  env or environ, with module constants resolved (`os.environ.get(CHILD_ENV)`);
* the `*_SECONDS` form config._seconds derives from each `*_MINUTES` name.

load_settings is also run with recording helpers (see test_config_documented.py), so a
name built at run time that this scan cannot see fails the test instead of going unseen.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "payments_svc"
DOC = REPO / "deployment.md"
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_ENVIRON = {"env", "environ"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_environ(node: ast.AST) -> bool:
    return _dotted(node).rsplit(".", 1)[-1] in _ENVIRON


def _constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _string(node: ast.AST, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def scan_file(path: Path, shared: dict[str, str] | None = None) -> dict[str, set[str]]:
    """{variable: {how it is read}} for one module; `shared` holds other modules'
    constants (a name imported from another module: `from .server import CHILD_ENV`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = {**(shared or {}), **_constants(tree)}
    found: dict[str, set[str]] = {}

    def add(name: str | None, how: str) -> None:
        if name and ENV_NAME.match(name):
            found.setdefault(name, set()).add(how)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = _dotted(node.func)
            if node.args and _is_environ(node.args[0]):  # helper(environ, "NAME", ...)
                for arg in node.args[1:]:
                    name = _string(arg, constants)
                    add(name, func)
                    if func == "_seconds" and name and name.endswith("_MINUTES") and path.name == "config.py":
                        add(name.removesuffix("_MINUTES") + "_SECONDS", "_seconds (derived)")
            elif func.endswith((".get", ".pop", ".setdefault")) and _is_environ(node.func.value) and node.args:
                add(_string(node.args[0], constants), func)
            elif func in ("os.getenv", "getenv") and node.args:
                add(_string(node.args[0], constants), func)
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            add(_string(node.slice, constants), "environ[...]")
    return found


@cache
def code_env_vars() -> dict[str, frozenset[str]]:
    """{variable: {module paths reading it}} over src/payments_svc (generated code excluded)."""
    out: dict[str, set[str]] = {}
    paths = [p for p in sorted(SRC.rglob("*.py")) if "gen" not in p.relative_to(SRC).parts]
    shared: dict[str, str] = {}
    for path in paths:
        shared.update(_constants(ast.parse(path.read_text(), filename=str(path))))
    for path in paths:
        for name in scan_file(path, shared):
            out.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return {name: frozenset(paths) for name, paths in out.items()}


def doc_table_vars(text: str | None = None) -> set[str]:
    """Variables in the first cell of any Markdown table row of deployment.md
    (`NAME`, several per cell allowed: `X_MINUTES` / `X_SECONDS`)."""
    text = DOC.read_text() if text is None else text
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        first_cell = line.strip("|").split("|", 1)[0]
        names.update(n for n in re.findall(r"`([^`]+)`", first_cell) if ENV_NAME.match(n))
    return names
