"""Run settings (flags, then env) and Go duration parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from worker.errors import ConfigError
from worker.retry import DEFAULT_POLICY, RetryPolicy

if TYPE_CHECKING:  # worker.locations imports this module
    from worker.locations import Shard

CSI_FEATURE = "EnableCSI"
KNOWN_FEATURES = frozenset({CSI_FEATURE})

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


def parse_features(text: str | None) -> frozenset[str]:
    """Velero's comma-separated feature list; unknown names are a usage error."""
    if not text:
        return frozenset()
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - KNOWN_FEATURES)
    if unknown:
        raise ConfigError(f"unknown feature(s) {unknown}; known features: {sorted(KNOWN_FEATURES)}")
    return names


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one run needs to know, resolved from flags and environment."""

    namespace: str
    kubeconfig: str | None = None
    context: str | None = None
    default_sync_period: timedelta = timedelta(minutes=1)
    features: frozenset[str] = frozenset()
    locations: frozenset[str] = frozenset()  # empty = all
    force: bool = False
    dry_run: bool = False
    concurrency: int = 16
    # None: no client-side limit when the API server has API Priority and Fairness, else
    # Velero's 100/100 (worker.ratelimit.choose_rate_limit).
    kube_qps: float | None = None
    kube_burst: int | None = None
    request_timeout: float = 30.0
    retry: RetryPolicy = field(default=DEFAULT_POLICY)
    log_level: str = "info"
    log_format: str = "text"
    # Mass-deletion guard (worker.guard): see --mass-orphan-share / --mass-orphan-floor.
    mass_orphan_share: float = 0.5
    mass_orphan_floor: int = 10
    allow_mass_orphan_deletion: bool = False
    pushgateway_url: str | None = None
    # After SIGTERM/SIGINT, how long work in flight may run (worker.shutdown).
    shutdown_grace: float = 20.0
    # Sync the way this Velero version does (worker.profile): "auto" or X.Y[.Z].
    velero_version: str = "auto"
    velero_deployment: str = "velero"  # read for "auto"
    # The only folder a BSL's spec.config.credentialsFile may point into (the chart mounts
    # the credentials Secret there).
    credentials_dir: str = "/credentials"
    # Only the locations of this shard (--shard I/N, or an Indexed Job's index and --shards).
    shard: Shard | None = None

    @property
    def csi_enabled(self) -> bool:
        return CSI_FEATURE in self.features
