"""Go ``time.ParseDuration``: Velero's periods and TTLs are Go durations (``1m0s``)."""

from __future__ import annotations

import re
from datetime import timedelta

from worker.errors import ConfigError

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_NS = (1 << 63) - 1
_MAX_FRACTION_DIGITS = 30
_COMPONENT = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> timedelta:
    """Parse a Go ``time.ParseDuration`` string (``1m0s``, ``1h30m``, ``-1.5s``, ``0``).

    Raises ConfigError for anything Go would reject (missing unit, unknown unit, empty).
    """
    original = text
    sign = 1
    if text[:1] in ("+", "-"):  # not `in "+-"`: "" is in every string
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return timedelta(0)
    if not text:
        raise ConfigError(f"invalid duration {original!r}")
    # Go's time.Duration is an int64 of nanoseconds; anything larger is rejected.
    limit = _MAX_NS + 1 if sign < 0 else _MAX_NS
    total_ns = 0
    pos = 0
    while pos < len(text):
        match = _COMPONENT.match(text, pos)
        if match is None:
            raise ConfigError(
                f"invalid duration {original!r}: expected a number and a unit "
                f"(ns, us, ms, s, m, h), e.g. 1m0s or 1h30m"
            )
        number, unit = match.groups()
        whole, _, frac = number.partition(".")
        whole = whole.lstrip("0")
        if len(whole) > len(str(_MAX_NS)):
            raise ConfigError(f"invalid duration {original!r}: out of range")
        frac = frac[:_MAX_FRACTION_DIGITS]  # digits below a nanosecond do not count
        scale = _NS_PER_UNIT[unit]
        total_ns += int(whole or "0") * scale
        if frac:
            total_ns += int(frac) * scale // 10 ** len(frac)
        if total_ns > limit:
            raise ConfigError(f"invalid duration {original!r}: out of range")
        pos = match.end()
    # timedelta counts microseconds: round up, so that a positive period (1ns) never
    # becomes 0, which would mean "never sync".
    return timedelta(microseconds=sign * -(-total_ns // 1000))


def go_duration(value: timedelta) -> str:
    """Go's ``time.Duration.String()``: ``1m0s``, ``1h30m0s``, ``1.5s``, ``500ms``, ``0s``."""
    ns = (value // timedelta(microseconds=1)) * 1_000
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:  # under a second: the largest unit that keeps it >= 1
        unit, size = next((u, n) for u, n in (("ms", 10**6), ("µs", 10**3), ("ns", 1)) if ns >= n)
        return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3_600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return sign + text + _decimal(rest, 10**9) + "s"


def _decimal(count: int, unit: int) -> str:
    whole, fraction = divmod(count, unit)
    digits = f"{fraction:0{len(str(unit)) - 1}d}".rstrip("0") if unit > 1 else ""
    return f"{whole}.{digits}" if digits else str(whole)
