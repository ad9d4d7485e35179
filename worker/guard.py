"""The mass-deletion guard (not in Velero): an emptied bucket, a wrong prefix or a credentials
mix-up makes a store listing look empty, and Velero would then delete every Completed Backup
of that location. When the orphans of a location are both many (an absolute floor) and most
of its Backups (a share), the sync deletes none of them and says why."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SHARE = 0.5
DEFAULT_FLOOR = 10


@dataclass(frozen=True, slots=True)
class MassDeletionGuard:
    """``share``: the fraction of a location's Backups above which deleting is suspicious;
    ``floor``: the fewest orphans that can ever be called a mass deletion; ``allow``: the
    operator's override (``--allow-mass-orphan-deletion``)."""

    share: float = DEFAULT_SHARE
    floor: int = DEFAULT_FLOOR
    allow: bool = False

    def trips(self, orphans: int, location_backups: int) -> bool:
        """True when ``orphans`` of the location's ``location_backups`` Backups are at least
        ``floor`` and more than ``share`` of them (whatever ``allow`` says)."""
        return orphans > 0 and orphans >= self.floor and orphans > self.share * location_backups

    def blocked_reason(self, orphans: int, location_backups: int) -> str:
        """Why the deletion is blocked, or "" when it may go ahead."""
        if self.allow or not self.trips(orphans, location_backups):
            return ""
        return (
            f"mass deletion blocked: {orphans} of the {location_backups} Backups of this "
            f"location are absent from the backup store (more than {self.share:.0%} and at "
            f"least {self.floor}); an emptied bucket, a wrong prefix or the wrong credentials "
            f"look like this. Nothing was deleted: check the location, or re-run with "
            f"--allow-mass-orphan-deletion if these backups were really removed"
        )


DEFAULT_GUARD = MassDeletionGuard()
