"""Rules for outbound status callbacks that need no I/O: where they may be sent
(the destination policy), when a failed delivery is retried, and how a Retry-After
header is read."""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Each retry waits about four times longer than the one before, up to the cap. With
# the defaults (base 5 min, cap 12 h, 10 attempts) the nominal gaps are 5m, 20m, 1h20m,
# 5h20m, then 12h: about 67 h in all, between the Svix (27.5 h) and Standard Webhooks
# (75 h) schedules.
BACKOFF_FACTOR = 4
_MAX_EXPONENT = 40  # keeps the float finite for absurd attempt counts
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")


def retry_delay(attempts_made: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts_made`-th failed attempt.

    Jittered over the upper half of the nominal gap ("equal jitter"): retries of many
    deliveries that failed together still spread out, and the schedule keeps a floor
    (half the nominal total, about 33 h by default) so that a receiver that is down for a
    day is still reached. Jitter from zero ("full jitter") could not promise that floor.
    """
    nominal = min(cap, base * BACKOFF_FACTOR ** min(max(attempts_made - 1, 0), _MAX_EXPONENT))
    return nominal / 2 + (rng or random).uniform(0, nominal / 2)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date) as seconds from `now`
    (naive UTC); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None  # HTTP dates are GMT; a zone-less date is not one
    return max(0.0, (moment.astimezone(UTC).replace(tzinfo=None) - now).total_seconds())


def parse_host_pattern(pattern: str) -> str:
    """Normalises one PAYMENTS_CALLBACK_ALLOWED_HOSTS entry: a host name or IP
    (`hooks.example.com`, `127.0.0.1`, `::1`) or `*.domain` for any host under domain."""
    pattern = pattern.strip().lower().rstrip(".")
    if pattern.startswith("[") and pattern.endswith("]"):
        pattern = pattern[1:-1]  # an IPv6 literal as written in URLs
    try:
        ipaddress.ip_address(pattern)
        return pattern
    except ValueError:
        pass
    name = pattern.removeprefix("*.")
    if not name or not all(label and _LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{pattern!r} is not a host name, an IP address or *.domain")
    return pattern


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Empty patterns allow any host; `*.example.com` matches hosts under example.com
    (not example.com itself)."""
    if not patterns:
        return True
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


# Cloud metadata services hand out credentials: never a callback destination, whatever
# the allow-lists say. (169.254.0.0/16 is link-local, refused anyway; the others are not.)
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
    "169.254.170.2",  # AWS ECS task credentials
    "169.254.170.23",  # AWS EKS Pod Identity
    "fd00:ec2::254",  # AWS instance metadata over IPv6 (inside the private fc00::/7)
    "fd00:ec2::23",  # AWS EKS Pod Identity over IPv6
    "100.100.100.200",  # Alibaba Cloud (inside the shared 100.64.0.0/10)
    "168.63.129.16",  # Azure WireServer (a public address)
))
# Where internal services live; allowed by default (PAYMENTS_CALLBACK_ALLOWED_NETWORKS narrows).
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # 0.0.0.0 reaches the local host on Linux
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: a NAT64 gateway forwards to the IPv4 inside

# The kinds of address never sent to, and how a refusal names them.
ALWAYS_REFUSED = {
    "metadata": "a cloud metadata address",
    "unspecified": "an unspecified address",
    "link-local": "a link-local address",
    "multicast": "a multicast address",
    "reserved": "a reserved address",
}


def address_kind(ip: IPAddress) -> str:
    """metadata, unspecified, link-local, multicast, loopback, private, public or reserved.
    An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) is the IPv4 one: that
    is where the packets end up."""
    ip = _carried_ipv4(ip) or ip
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_loopback:
        return "loopback"
    if any(ip in network for network in PRIVATE_NETWORKS):
        return "private"
    if ip.is_global and not ip.is_reserved and not (ip.version == 6 and ip.is_site_local):
        return "public"
    return "reserved"  # documentation, benchmarking, IETF protocol, 240/4, broadcast, deprecated ranges


def _carried_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def ip_literal(host: str) -> IPAddress | None:
    """The address a URL host denotes when it is an IP literal, in any spelling a
    resolver accepts (`127.1`, `0x7f.1`, `2130706433`, `0177.0.0.1`, `::ffff:127.0.0.1`);
    None for a name. Raises ValueError for a host that is neither (`1.2.3.999`), as
    the WHATWG URL standard does for hosts ending in a number."""
    if ":" in host:
        return ipaddress.ip_address(unquote(host.strip("[]")))  # a zone id is written %25eth0 in URLs
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()  # a trailing dot
    if not _NUMBER.fullmatch(parts[-1]):
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if len(numbers) > 4 or any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


def _ipv4_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)  # a leading zero means octal, to inet_aton and browsers alike
    return int(part)


def is_localhost_name(host: str) -> bool:
    """`localhost` and names under it resolve to loopback without asking DNS (RFC 6761)."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


@dataclass(frozen=True)
class CallbackDestinations:
    """Where status callbacks may go. Cloud metadata, unspecified, link-local, multicast
    and reserved addresses never; loopback only outside production; private and public
    addresses unless `allowed_networks` is set and leaves them out. `allowed_hosts`
    (PAYMENTS_CALLBACK_ALLOWED_HOSTS) restricts the URL's host name as well.

    `url_problem` is what can be known from the URL alone (create, replay, and before
    a delivery); `address_problem` is checked by the dispatcher for every address a
    host name resolves to, right before it connects (so a name that resolves, or is
    re-pointed later, to an internal address is refused too)."""

    allowed_hosts: tuple[str, ...] = ()
    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = True

    def url_problem(self, url: str) -> str | None:
        """Why a status callback may not be sent to `url`, or None when it may (as far
        as the URL tells: a host name is checked again once resolved)."""
        try:
            host = URL(url).raw_host  # the parser the dispatcher's HTTP client uses
        except (ValueError, TypeError):
            return "status_callback_url is not a valid URL"
        if not host:
            return "status_callback_url has no host"
        if not host_allowed(host, self.allowed_hosts):
            return f"status_callback_url host {host!r} is not allowed by PAYMENTS_CALLBACK_ALLOWED_HOSTS"
        try:
            ip = ip_literal(host)
        except ValueError:
            return f"status_callback_url host {host!r} is not a valid address"
        if ip is not None:
            return self.address_problem(host, ip)
        if is_localhost_name(host) and not self.allow_loopback:
            return f"status_callback_url host {host!r} is a loopback address; refused in production"
        return None

    def address_problem(self, host: str, ip: IPAddress) -> str | None:
        """Why `host`, at address `ip`, may not receive status callbacks, or None."""
        kind = address_kind(ip)
        ip = _carried_ipv4(ip) or ip
        where = f"status_callback_url host {host!r}" + (f" ({ip})" if str(ip) != host else "")
        if kind in ALWAYS_REFUSED:
            return f"{where} is {ALWAYS_REFUSED[kind]}; status callbacks are never sent there"
        if kind == "loopback" and not self.allow_loopback:
            return f"{where} is a loopback address; refused in production"
        if self.allowed_networks and not any(ip in network for network in self.allowed_networks):
            return f"{where} is outside PAYMENTS_CALLBACK_ALLOWED_NETWORKS"
        return None


def parse_network(entry: str) -> IPNetwork:
    """One PAYMENTS_CALLBACK_ALLOWED_NETWORKS entry: `10.20.0.0/16`, `fd12:3456::/48`, or one address."""
    try:
        return ipaddress.ip_network(entry.strip())
    except ValueError as exc:
        raise ValueError(f"{entry.strip()!r} is not a network such as 10.20.0.0/16 ({exc})") from None
