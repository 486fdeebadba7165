"""The authenticated caller and what it may see."""

from __future__ import annotations

from dataclasses import dataclass

ANY_CALLER = "*"


@dataclass(frozen=True, slots=True)
class Caller:
    """`service_name` is who the key belongs to; `acts_for` the other caller services
    it was granted (a gateway), "*" meaning all."""

    service_name: str
    acts_for: frozenset[str] = frozenset()
    # Names the key in the audit trail (never the key itself): the built-in key's id, or
    # a digest prefix of a key the Auth service validated.
    key_id: str = ""

    def may_act_for(self, caller_service: str) -> bool:
        return caller_service == self.service_name or ANY_CALLER in self.acts_for or caller_service in self.acts_for

    @property
    def is_admin(self) -> bool:
        """A key that acts for every caller service: operators' endpoints are theirs."""
        return ANY_CALLER in self.acts_for

    def visible_callers(self) -> frozenset[str] | None:
        """The caller services whose payments this caller sees; None means all."""
        if ANY_CALLER in self.acts_for:
            return None
        return self.acts_for | {self.service_name}


def parse_acts_for(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())
