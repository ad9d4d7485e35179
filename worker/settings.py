"""Run settings (flags, then env)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from worker.errors import ConfigError
from worker.guard import DEFAULT_FLOOR, DEFAULT_SHARE, MassDeletionGuard
from worker.locations import Shard
from worker.retry import DEFAULT_POLICY, RetryPolicy
from worker.shutdown import DEFAULT_GRACE_SECONDS

CSI_FEATURE = "EnableCSI"
KNOWN_FEATURES = frozenset({CSI_FEATURE})


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
    mass_orphan_share: float = DEFAULT_SHARE
    mass_orphan_floor: int = DEFAULT_FLOOR
    allow_mass_orphan_deletion: bool = False
    pushgateway_url: str | None = None
    # After SIGTERM/SIGINT, how long work in flight may run (worker.shutdown).
    shutdown_grace: float = DEFAULT_GRACE_SECONDS
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

    @property
    def guard(self) -> MassDeletionGuard:
        return MassDeletionGuard(
            self.mass_orphan_share, self.mass_orphan_floor, self.allow_mass_orphan_deletion
        )
