"""Orphans (Velero's deleteOrphanedBackups): the Backups of a location whose folders are gone
from its store. ``orphan_plan`` decides which to delete and which the mass-deletion guard
keeps (pure); ``delete_orphans`` applies that plan, and under the profiles that do it
cleans up the deleted orphans' CSI snapshots."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from worker import rewrite, velero
from worker.cluster import Cluster
from worker.cluster_backups import ClusterBackup, summarize
from worker.errors import ClusterError, NotFound
from worker.guard import MassDeletionGuard
from worker.report import ItemFailure, LocationReport
from worker.sync_options import SyncOptions
from worker.velero import (
    BACKUP,
    BACKUP_NAME_LABEL,
    ORPHAN_PHASES,
    STORAGE_LOCATION_LABEL,
    VOLUME_SNAPSHOT,
    VOLUME_SNAPSHOT_CONTENT,
    Obj,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OrphanPlan:
    """What to do with a location's orphans: delete ``delete``; or keep ``blocked``, for
    the mass-deletion guard's reason ``why``."""

    delete: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    why: str = ""
    location_backups: int = 0  # the location's Backups in the cluster (the guard's whole)
    # Enough to trip the guard, deleted only because the operator allows a mass deletion.
    mass: bool = False


def orphans_of(
    location: str, existing: Iterable[ClusterBackup], in_store: Collection[str]
) -> list[str]:
    """Backups labelled with this location, Completed or PartiallyFailed, and absent from
    the store listing."""
    label = rewrite.valid_label(location)
    return sorted(
        b.name
        for b in existing
        if b.location_label == label and b.phase in ORPHAN_PHASES and b.name not in in_store
    )


def orphan_plan(
    existing: Collection[ClusterBackup],
    in_store: Collection[str],
    location: str,
    guard: MassDeletionGuard,
) -> OrphanPlan:
    """The location's orphans among ``existing``, and the guard's verdict on deleting them
    (its share counts only this location's Backups)."""
    orphans = tuple(orphans_of(location, existing, in_store))
    label = rewrite.valid_label(location)
    location_backups = sum(1 for b in existing if b.location_label == label)
    why = guard.blocked_reason(len(orphans), location_backups)
    if why:
        return OrphanPlan(blocked=orphans, why=why, location_backups=location_backups)
    mass = guard.trips(len(orphans), location_backups)
    return OrphanPlan(delete=orphans, location_backups=location_backups, mass=mass)


def delete_orphans(
    cluster: Cluster,
    options: SyncOptions,
    location: str,
    existing: list[ClusterBackup] | None,
    in_store: set[str],
    report: LocationReport,
) -> None:
    """Plan and apply: delete the orphans the guard lets go (with their CSI snapshots under
    the profiles that clean them up), or record why it kept them. ``existing`` None: the
    first listing failed, so this location's Backups are listed again here."""
    if existing is None:
        existing = _location_backups(cluster, options.namespace, location, report)
        if existing is None:
            return
    plan = orphan_plan(existing, in_store, location, options.guard)
    orphans = len(plan.delete) + len(plan.blocked)
    ctx = {"location": location, "orphans": orphans, "locationBackups": plan.location_backups}
    if plan.why:
        log.error(
            "mass deletion guard: deleting no orphaned backups", extra={**ctx, "why": plan.why}
        )
        report.orphans_blocked = len(plan.blocked)
        report.mass_deletion_blocked = plan.why
        return
    if plan.mass:
        log.warning("deleting a mass of orphaned backups, as allowed by the operator", extra=ctx)
    clean_csi = options.csi and options.profile.cleans_up_csi_of_orphans
    for name in plan.delete:
        bctx = {"location": location, "backup": name}
        if _delete_orphan(cluster, options.namespace, name, report, bctx) and clean_csi:
            _delete_csi_snapshots(name, cluster, options.namespace, report, bctx)


def _location_backups(
    cluster: Cluster, namespace: str, location: str, report: LocationReport
) -> list[ClusterBackup] | None:
    """This location's Backups, listed by its label as Velero lists them; None (and an item
    error: no orphan is deleted) when that fails too."""
    selector = f"{STORAGE_LOCATION_LABEL}={rewrite.valid_label(location)}"
    try:
        return [summarize(b) for b in cluster.list(BACKUP, namespace, selector)]
    except ClusterError as exc:
        log.error(
            "cannot list Backups; deleting no orphans",
            extra={"location": location, "error": str(exc)},
        )
        report.errors.append(ItemFailure(f"Backups of location {location}", str(exc)))
        return None


def _delete_orphan(
    cluster: Cluster, namespace: str, name: str, report: LocationReport, ctx: dict[str, str]
) -> bool:
    """True when this run deleted it (not when someone else did first)."""
    try:
        cluster.delete(BACKUP, name, namespace)
    except NotFound:
        return False
    except ClusterError as exc:
        log.error("cannot delete orphaned backup", extra={**ctx, "error": str(exc)})
        report.errors.append(ItemFailure(f"Backup {namespace}/{name}", str(exc)))
        return False
    report.orphans_deleted += 1
    log.info("deleted orphaned backup (not in the backup store)", extra=ctx)
    return True


def _delete_csi_snapshots(
    backup: str, cluster: Cluster, namespace: str, report: LocationReport, ctx: dict[str, str]
) -> None:
    """The orphan's VolumeSnapshots in the Velero namespace, then its VolumeSnapshotContents
    that no live VolumeSnapshot outside that namespace is bound to.

    Velero's manager cache sees only its own namespace, so a running Velero never deletes
    snapshots elsewhere; and its restore labels the snapshots it restores into application
    namespaces with the same backup name. A content bound to one of those is the
    application's data: with ``deletionPolicy: Delete`` its deletion deletes the cloud
    snapshot."""
    selector = f"{BACKUP_NAME_LABEL}={rewrite.valid_label(backup)}"
    try:
        snapshots = list(cluster.list(VOLUME_SNAPSHOT, namespace, selector))
    except ClusterError as exc:
        report.errors.append(ItemFailure(f"VolumeSnapshots of {backup}", str(exc)))
        snapshots = []
    for vs in snapshots:
        name = str(velero.metadata(vs).get("name"))
        try:
            cluster.delete(VOLUME_SNAPSHOT, name, namespace)
        except NotFound:
            pass
        except ClusterError as exc:
            report.errors.append(ItemFailure(f"VolumeSnapshot {namespace}/{name}", str(exc)))
    try:
        contents = list(cluster.list(VOLUME_SNAPSHOT_CONTENT, None, selector))
    except ClusterError as exc:
        log.warning("cannot list snapshot contents", extra={**ctx, "error": str(exc)})
        report.errors.append(ItemFailure(f"VolumeSnapshotContents of {backup}", str(exc)))
        return
    for content in contents:
        name = str(velero.metadata(content).get("name"))
        ref = f"VolumeSnapshotContent {name}"
        try:
            bound = _bound_outside(content, namespace, cluster)
        except ClusterError as exc:
            report.errors.append(
                ItemFailure(ref, f"kept: cannot check the VolumeSnapshot bound to it: {exc}")
            )
            continue
        if bound:
            log.info(
                "keeping snapshot content bound to a live VolumeSnapshot outside the Velero "
                "namespace",
                extra={**ctx, "object": ref, "volumeSnapshot": bound},
            )
            continue
        try:
            cluster.delete(VOLUME_SNAPSHOT_CONTENT, name, None)
        except NotFound:
            pass
        except ClusterError as exc:
            log.warning("cannot delete snapshot content", extra={**ctx, "error": str(exc)})
            report.errors.append(ItemFailure(ref, str(exc)))


def _bound_outside(content: Obj, namespace: str, cluster: Cluster) -> str:
    """``ns/name`` of the live VolumeSnapshot outside ``namespace`` that the content's
    ``spec.volumeSnapshotRef`` names, or "" when there is none. Raises ClusterError when
    that cannot be known."""
    ref = velero.spec(content).get("volumeSnapshotRef")
    if not isinstance(ref, dict):
        return ""
    ref_ns, ref_name = ref.get("namespace"), ref.get("name")
    if not ref_ns or not ref_name or ref_ns == namespace:
        return ""
    if cluster.get(VOLUME_SNAPSHOT, str(ref_name), str(ref_ns)) is None:
        return ""
    return f"{ref_ns}/{ref_name}"
