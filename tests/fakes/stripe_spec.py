"""Request checking for the fake Stripe server, driven by Stripe's published OpenAPI spec.

Stripe's v1 API takes form-encoded bodies (and query strings) whose keys nest with brackets:
`line_items[0][price_data][currency]=usd`, `metadata[key]=v`, `expand[]=x`. `decode_form` turns
them into nested dicts and lists; `StripeSpec` finds the operation for a method and path and
checks the decoded parameters against it, returning them typed (ints, bools, lists).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

# A string schema that accepts only "": Stripe's way of saying "unset this field".
EMPTY = {"type": "string", "enum": [""]}


class ParamError(Exception):
    """A parameter Stripe would reject: answered as a 400 invalid_request_error."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def _split_key(key: str) -> list[str]:
    match = _KEY.match(key)
    if not match:
        raise ParamError(f"Received unknown parameter: {key}", key)
    return [match[1], *re.findall(r"\[([^\[\]]*)\]", match[2])]


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nests bracketed keys. Indexed keys stay dicts ({"0": ...}) until the schema says array,
    since metadata keys may be digits too; `key[]` appends to a list."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _split_key(key)
        append = parts[-1] == "" and len(parts) > 1
        if append:
            parts = parts[:-1]
        if "" in parts:
            raise ParamError(f"Invalid array parameter: {key}", key)
        node = root
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamError(f"Invalid hash: {_bracketed(parts[: depth + 1])}", _bracketed(parts[: depth + 1]))
        leaf = parts[-1]
        if append:
            values = node.setdefault(leaf, [])
            if not isinstance(values, list):
                raise ParamError(f"Invalid array: {_bracketed(parts)}", _bracketed(parts))
            values.append(value)
        elif isinstance(node.get(leaf), (dict, list)):
            raise ParamError(f"Invalid string: {_bracketed(parts)}", _bracketed(parts))
        else:
            node[leaf] = value  # a repeated scalar key: the last one wins, as with Rack
    return root


def _bracketed(parts: list[str]) -> str:
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def _child(param: str, key: str | int) -> str:
    return f"{param}[{key}]" if param else str(key)


def coerce(schema: Schema, value: Any, param: str = "") -> Any:
    """Checks a decoded value against a request schema and returns it typed."""
    if "anyOf" in schema:
        return _coerce_any_of(schema["anyOf"], value, param)
    kind = schema.get("type")
    if kind == "object":
        return _coerce_object(schema, value, param)
    if kind == "array":
        return _coerce_array(schema, value, param)
    if not isinstance(value, str):
        raise ParamError(f"Invalid {kind}: {param} must be a {kind}, not a hash or array", param)
    if kind == "string":
        return _coerce_string(schema, value, param)
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", value):
            raise ParamError(f"Invalid integer: {value}", param)
        return int(value)
    if kind == "number":
        try:
            return float(Decimal(value))
        except InvalidOperation:
            raise ParamError(f"Invalid decimal: {value}", param) from None
    if kind == "boolean":
        if value not in ("true", "false"):
            raise ParamError(f"Invalid boolean: {value}", param)
        return value == "true"
    raise AssertionError(f"schema type {kind!r} not handled ({param})")


def _coerce_any_of(alternatives: list[Schema], value: Any, param: str) -> Any:
    errors: list[tuple[Schema, ParamError]] = []
    for alternative in alternatives:
        try:
            return coerce(alternative, value, param)
        except ParamError as error:
            errors.append((alternative, error))
    # Report the alternative the value was evidently aiming at, not the "" escape hatch.
    structured = isinstance(value, (dict, list))
    for alternative, error in errors:
        if alternative != EMPTY and (alternative.get("type") in ("object", "array")) == structured:
            raise error
    raise errors[0][1]


def _coerce_object(schema: Schema, value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParamError(f"Invalid object: {param} must be a hash", param)
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")  # a schema for free-form maps (metadata); else closed
    if not isinstance(extra, dict):  # unknown names first, as Stripe reports them
        for key in value:
            if key not in properties:
                raise ParamError(f"Received unknown parameter: {_child(param, key)}", _child(param, key))
    for key in schema.get("required", []):
        if key not in value:
            raise ParamError(f"Missing required param: {_child(param, key)}.", _child(param, key))
    return {key: coerce(properties.get(key, extra), item, _child(param, key)) for key, item in value.items()}


def _coerce_array(schema: Schema, value: Any, param: str) -> list[Any]:
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        value = [value[k] for k in sorted(value, key=int)]
    if not isinstance(value, list):
        raise ParamError(f"Invalid array: {param} must be an array", param)
    return [coerce(schema.get("items", {}), item, _child(param, i)) for i, item in enumerate(value)]


def _coerce_string(schema: Schema, value: str, param: str) -> str:
    # x-stripeBypassValidation marks enums Stripe keeps open (new payment method types, ...).
    if "enum" in schema and value not in schema["enum"] and not schema.get("x-stripeBypassValidation"):
        choices = [v for v in schema["enum"] if v] or ['""']
        listed = ", ".join(choices[:-1]) + f", or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise ParamError(f"Invalid {param}: must be one of {listed}", param)
    if len(value) > schema.get("maxLength", len(value)):
        raise ParamError(f"Invalid string: {param} must be at most {schema['maxLength']} characters", param)
    if schema.get("format") == "decimal":
        try:
            Decimal(value)
        except InvalidOperation:
            raise ParamError(f"Invalid decimal: {value}", param) from None
    return value


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the spec's template, e.g. /v1/checkout/sessions/{session}
    path_params: tuple[str, ...]
    schema: Schema  # query and body parameters as one closed object schema

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        return coerce(self.schema, params)


@cache
def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def load_fixtures(spec_dir: Path) -> dict[str, dict[str, Any]]:
    """Stripe's example object of each type, keyed by object type ("checkout.session", ...)."""
    return _load_json(Path(spec_dir) / "fixtures3.json")["resources"]


class StripeSpec:
    """The operations of spec3.json, with the differences of newer API versions applied.

    `additions` maps (method, path template) to {bracketed param: schema}; a bracketed name puts the
    schema inside an existing object (`subscription_data[metadata]`). `required_changes` maps
    (method, path template) to {param: now required?}.
    """

    def __init__(
        self,
        spec_dir: Path,
        additions: Mapping[tuple[str, str], Mapping[str, Schema]],
        required_changes: Mapping[tuple[str, str], Mapping[str, bool]],
    ):
        paths = _load_json(Path(spec_dir) / "spec3.json")["paths"]
        self._operations: dict[tuple[str, str], Operation] = {}
        for path, methods in paths.items():
            for method, raw in methods.items():
                schema = _operation_schema(raw)
                for name, added in additions.get((method, path), {}).items():
                    _add_param(schema, _split_key(name), added)
                for name, required in required_changes.get((method, path), {}).items():
                    schema["required"] = [r for r in schema["required"] if r != name] + ([name] if required else [])
                path_params = tuple(re.findall(r"\{([^}]+)\}", path))
                self._operations[(method, path)] = Operation(method, path, path_params, schema)
        unknown = (set(additions) | set(required_changes)) - set(self._operations)
        if unknown:
            raise ValueError(f"spec changes name operations missing from the spec: {sorted(unknown)}")
        # Literal segments beat templates: /v1/prices/search before /v1/prices/{price}.
        self._routes = sorted(
            ((_path_regex(path), method, path) for method, path in self._operations),
            key=lambda route: route[2].count("{"),
        )

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        method = method.lower()
        for regex, route_method, template in self._routes:
            if route_method == method and (found := regex.fullmatch(path)):
                operation = self._operations[(method, template)]
                return operation, dict(zip(operation.path_params, found.groups(), strict=True))
        return None


def _path_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)))


def _operation_schema(operation: Mapping[str, Any]) -> Schema:
    body = operation.get("requestBody", {}).get("content", {}).get("application/x-www-form-urlencoded", {}).get("schema", {})
    schema: Schema = {
        "type": "object",
        "properties": copy.deepcopy(body.get("properties", {})),
        "required": list(body.get("required", [])),
    }
    # Stripe reads GET and DELETE params from the query string; the spec declares them either
    # as query parameters or (DELETE) in the body, so both go into one schema.
    for param in operation.get("parameters", []):
        if param["in"] == "query":
            schema["properties"][param["name"]] = copy.deepcopy(param["schema"])
            if param.get("required"):
                schema["required"].append(param["name"])
    return schema


def _add_param(schema: Schema, parts: list[str], added: Schema) -> None:
    *parents, leaf = parts
    node = schema
    for part in parents:
        node = node["properties"].setdefault(part, {"type": "object", "properties": {}})
        if "anyOf" in node:  # e.g. object-or-"": extend the object alternative
            node = next(alt for alt in node["anyOf"] if alt.get("type") == "object")
    node.setdefault("properties", {})[leaf] = added
