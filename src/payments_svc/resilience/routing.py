"""Routing rules: which provider takes a create that names none (`provider: 0`).

PAYMENTS_ROUTING_RULES is a JSON list of rules, tried in order; the first that matches
decides, and lists its providers in preference order. Every match field is optional
(absent: anything), e.g.

    [{"name": "vnd", "currencies": ["VND"], "providers": ["vnpay"]},
     {"name": "big-shop", "caller_services": ["shop"], "min_amount_cents": 100000, "providers": ["stripe", "sandbox"]}]

Fields: name (unique), providers (required), caller_services, currencies,
payment_methods / payment_types (names as in the API: hosted_card, payment_link, one_time,
recurring), min_amount_cents / max_amount_cents (inclusive). No rule matching: the
default provider, as without rules. A later provider of the rule is used only when the
ones before it certainly created nothing (circuit open, connection refused): failover."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..domain.enums import PaymentMethod, PaymentType, ProviderType
from ..domain.errors import PaymentsError
from ..domain.payment import CreatePaymentCommand

FIELDS = {"name", "providers", "caller_services", "currencies", "payment_methods", "payment_types",
          "min_amount_cents", "max_amount_cents"}


class RoutingError(ValueError):
    """The rules are unusable; the message says which rule and why (one line)."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    providers: tuple[ProviderType, ...]
    caller_services: frozenset[str] = frozenset()
    currencies: frozenset[str] = frozenset()
    payment_methods: frozenset[int] = frozenset()
    payment_types: frozenset[int] = frozenset()
    min_amount_cents: int | None = None
    max_amount_cents: int | None = None

    def matches(self, cmd: CreatePaymentCommand) -> bool:
        return ((not self.caller_services or cmd.caller_service in self.caller_services)
                and (not self.currencies or cmd.currency.upper() in self.currencies)
                and (not self.payment_methods or cmd.payment_method in self.payment_methods)
                and (not self.payment_types or cmd.payment_type in self.payment_types)
                and (self.min_amount_cents is None or cmd.amount_cents >= self.min_amount_cents)
                and (self.max_amount_cents is None or cmd.amount_cents <= self.max_amount_cents))

    def describe(self) -> str:
        parts = [f"{label}={','.join(sorted(map(str, values)))}" for label, values in (
            ("caller_service", self.caller_services), ("currency", self.currencies),
            ("payment_method", {PaymentMethod(m).name.lower() for m in self.payment_methods}),
            ("payment_type", {PaymentType(t).name.lower() for t in self.payment_types})) if values]
        if self.min_amount_cents is not None or self.max_amount_cents is not None:
            low = "" if self.min_amount_cents is None else self.min_amount_cents
            high = "" if self.max_amount_cents is None else self.max_amount_cents
            parts.append(f"amount_cents={low}..{high}")
        return f"{self.name}\t{' '.join(parts) or '(any)'}\t-> {', '.join(p.code for p in self.providers)}"


def _names(rule: str, field: str, raw, enum=None) -> frozenset:
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and v.strip() for v in raw):
        raise RoutingError(f"routing rule {rule!r}: {field} must be a non-empty list of names")
    if enum is None:
        return frozenset(v.strip().upper() if field == "currencies" else v.strip() for v in raw)
    values = set()
    for v in raw:
        member = enum.__members__.get(v.strip().upper())
        if member is None or member == 0:
            choices = ", ".join(m.name.lower() for m in enum if m != 0)
            raise RoutingError(f"routing rule {rule!r}: unknown {field[:-1]} {v!r} (one of {choices})")
        values.add(int(member))
    return frozenset(values)


def _amount(rule: str, field: str, raw) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise RoutingError(f"routing rule {rule!r}: {field} must be a whole number of minor units >= 0")
    return raw


def parse_rules(text: str | None) -> tuple[Rule, ...]:
    """The rules of PAYMENTS_ROUTING_RULES; RoutingError names the rule and the problem."""
    if not text:
        return ()
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise RoutingError(f"PAYMENTS_ROUTING_RULES is not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise RoutingError("PAYMENTS_ROUTING_RULES must be a JSON list of rules")
    rules, seen = [], set()
    for index, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise RoutingError(f"routing rule {index} must be a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RoutingError(f"routing rule {index} needs a name")
        name = name.strip()
        if name in seen:
            raise RoutingError(f"routing rule {name!r} is defined twice")
        seen.add(name)
        unknown = set(item) - FIELDS
        if unknown:
            raise RoutingError(f"routing rule {name!r}: unknown field(s) {', '.join(sorted(unknown))}")
        _names(name, "providers", item.get("providers"))  # the list's shape
        providers = []
        for code in item["providers"]:
            member = ProviderType.__members__.get(code.strip().upper())
            if member is None or member == ProviderType.UNSPECIFIED:
                raise RoutingError(f"routing rule {name!r}: unknown provider {code!r}")
            if member in providers:
                raise RoutingError(f"routing rule {name!r}: provider {code!r} is listed twice")
            providers.append(member)
        rule = Rule(
            name=name, providers=tuple(providers),
            caller_services=_names(name, "caller_services", item["caller_services"]) if "caller_services" in item else frozenset(),
            currencies=_names(name, "currencies", item["currencies"]) if "currencies" in item else frozenset(),
            payment_methods=_names(name, "payment_methods", item["payment_methods"], PaymentMethod)
            if "payment_methods" in item else frozenset(),
            payment_types=_names(name, "payment_types", item["payment_types"], PaymentType)
            if "payment_types" in item else frozenset(),
            min_amount_cents=_amount(name, "min_amount_cents", item.get("min_amount_cents")),
            max_amount_cents=_amount(name, "max_amount_cents", item.get("max_amount_cents")),
        )
        if (rule.min_amount_cents is not None and rule.max_amount_cents is not None
                and rule.min_amount_cents > rule.max_amount_cents):
            raise RoutingError(f"routing rule {name!r}: min_amount_cents is above max_amount_cents")
        rules.append(rule)
    return tuple(rules)


def check_rules(rules: tuple[Rule, ...], providers: dict[ProviderType, object]) -> None:
    """Every provider a rule names is enabled and can take the currencies the rule routes to it."""
    for rule in rules:
        for provider_type in rule.providers:
            provider = providers.get(provider_type)
            if provider is None:
                raise RoutingError(f"routing rule {rule.name!r}: provider {provider_type.code} is not enabled")
            for currency in sorted(rule.currencies):
                probe = CreatePaymentCommand(
                    request_id="routing-check", caller_service="routing-check", resource_type="check",
                    resource_id="check", customer_ref="", amount_cents=rule.min_amount_cents or 1_000_000,
                    currency=currency, payment_method=min(rule.payment_methods or {PaymentMethod.HOSTED_CARD}),
                    payment_type=min(rule.payment_types or {PaymentType.ONE_TIME}), provider=int(provider_type),
                    recurring_interval="", recurring_interval_count=0, status_callback_url="", success_url="",
                    cancel_url="").normalized()
                try:
                    provider.validate(probe)
                except PaymentsError as exc:
                    raise RoutingError(f"routing rule {rule.name!r}: provider {provider_type.code} cannot take "
                                       f"currency {currency}: {exc.message}") from None


class Router:
    def __init__(self, rules: tuple[Rule, ...]):
        self.rules = rules

    def route(self, cmd: CreatePaymentCommand) -> Rule | None:
        """The first rule matching a create that names no provider; None: the default provider."""
        if cmd.provider != ProviderType.UNSPECIFIED:
            return None
        return next((rule for rule in self.rules if rule.matches(cmd)), None)
