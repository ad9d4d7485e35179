"""The API-create ceiling: the creates a full sync makes (a Backup, then its pod volume
backups, per backup) with the worker's own Kubernetes client, rate limiter, retry policy and
bounded pool, and no object store at all. Run as its own process, like the worker::

    python -m bench.ceiling --kubeconfig K --namespace NS --count 5000 \\
        --pod-volume-backups 2 --concurrency 16   # limits: the worker's own choice

With ``--mark`` it makes the API writes of the design the run stamps replaced
(docs/operations.md): each Backup with dependents created with an in-progress mark, which a
patch removes once its pod volume backups are in.

Prints one JSON line: ``{"created": ..., "failed": ..., "seconds": ..., "apiRateLimit":
{"qps": ..., "burst": ..., "why": ...}}`` (the limit in force, chosen as the worker chooses
when none is given). The objects are exactly those the worker would create from the
benchmark's bucket (``bench.dataset``), so the request bodies match. Also used to put a
synced cluster in place quickly (``--pod-volume-backups 0``) for the steady-state runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from bench.dataset import backup_name, seed_backup
from harness.seed import backup_document, pod_volume_backup_documents
from worker import rewrite
from worker.cluster import ClientOptions, KubeCluster
from worker.errors import AlreadyExists, ClusterError
from worker.pool import bounded_map
from worker.retry import RetryPolicy
from worker.velero import BACKUP, DEPENDENTS_PENDING_ANNOTATION, POD_VOLUME_BACKUP

LOCATION = "default"
MARK = DEPENDENTS_PENDING_ANNOTATION


def create_one(
    cluster: KubeCluster,
    index: int,
    namespace: str,
    pod_volume_backups: int,
    now: datetime,
    mark: bool = False,
) -> tuple[int, int]:
    """Create one backup and its pod volume backups, as the worker does; (created, failed)."""
    seed = seed_backup(index, pod_volume_backups)
    backup = rewrite.backup_for_cluster(backup_document(seed, now), namespace, LOCATION, now)
    mark = mark and pod_volume_backups > 0  # the worker marks only Backups with dependents
    if mark:
        backup["metadata"].setdefault("annotations", {})[MARK] = "true"
    created = failed = 0
    try:
        stored = cluster.create(BACKUP, backup)
        created += 1
    except AlreadyExists:
        return 0, 0
    except ClusterError:
        return 0, 1
    uid = str(stored["metadata"]["uid"])
    for pvb in pod_volume_backup_documents(seed):
        obj = rewrite.pod_volume_backup_for_cluster(pvb, seed.name, uid, namespace, LOCATION)
        try:
            cluster.create(POD_VOLUME_BACKUP, obj)
            created += 1
        except AlreadyExists:
            pass
        except ClusterError:
            failed += 1
    if mark and not failed:
        patch = {"metadata": {"annotations": {MARK: None}}}
        try:
            cluster.patch_merge(BACKUP, seed.name, namespace, patch)
        except ClusterError:
            failed += 1
    return created, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--start", type=int, default=0, help="first backup index")
    parser.add_argument("--pod-volume-backups", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    # Left out: chosen as the worker chooses (worker.ratelimit.choose_rate_limit).
    parser.add_argument("--kube-qps", type=float)
    parser.add_argument("--kube-burst", type=int)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument(
        "--mark", action="store_true", help="also the in-progress mark and its removal"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    cluster = KubeCluster.connect(
        ClientOptions(
            args.kubeconfig,
            None,
            qps=args.kube_qps,
            burst=args.kube_burst,
            timeout=args.request_timeout,
            pool_size=args.concurrency + 4,
            policy=RetryPolicy(),
        )
    )
    limit = cluster.rate_limit
    now = datetime.now(UTC)
    created = failed = 0
    indexes = range(args.start, args.start + args.count)
    try:
        for ok, bad in bounded_map(
            lambda i: create_one(
                cluster, i, args.namespace, args.pod_volume_backups, now, args.mark
            ),
            indexes,
            args.concurrency,
        ):
            created += ok
            failed += bad
    finally:
        cluster.close()
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {
                "created": created,
                "failed": failed,
                "seconds": round(seconds, 3),
                "first": backup_name(args.start),
                "apiRateLimit": None
                if limit is None
                else {"qps": limit.qps, "burst": limit.burst, "why": limit.why},
            }
        )
    )
    return 0 if failed == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
