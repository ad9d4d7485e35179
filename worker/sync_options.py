"""What one location's sync is told by its run: namespace, features, pool size, clock,
guard, progress, shutdown and Velero profile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from worker.guard import DEFAULT_GUARD, MassDeletionGuard
from worker.profile import DEFAULT_PROFILE, VeleroProfile
from worker.progress import Progress, ProgressFactory
from worker.shutdown import NEVER, Shutdown


@dataclass(frozen=True, slots=True)
class SyncOptions:
    namespace: str
    csi: bool
    concurrency: int
    now: Callable[[], datetime]
    guard: MassDeletionGuard = DEFAULT_GUARD
    progress: ProgressFactory = Progress
    shutdown: Shutdown = NEVER
    profile: VeleroProfile = DEFAULT_PROFILE
    run_id: str = ""  # new_run_id(); "" makes one per location
