"""In-memory fakes of the two ports (Cluster, ObjectStore), for fast tests of the algorithm.

They behave like the real things where the sync depends on it: the cluster assigns UIDs,
answers AlreadyExists and NotFound, filters by label selector and records every write; the
store lists common prefixes and returns None for absent keys. Failures are injected per
operation with ``fail_on``; anything else a test needs to happen at a call (a race lost, a
process killed half way, a slow answer, a record of what was asked) with ``before``.

The bucket's documents are built by ``harness.velero_docs``, as the seeding of real buckets
builds them.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from harness.velero_docs import (
    backup_files,
    backup_key,
    stored_backup,
)
from worker.errors import (
    AlreadyExists,
    ClusterError,
    ConfigError,
    NotFound,
    ObjectTooLarge,
    StoreError,
)
from worker.velero import SECRET, Kind

Obj = dict[str, Any]
Hook = Callable[..., object]  # called with a port call's arguments, kind first


def _matches(obj: Obj, selector: str | None) -> bool:
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def merge_patch(target: Obj, patch: Obj) -> None:
    """RFC 7386 JSON merge patch, in place: objects merge, null deletes, the rest replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if not isinstance(current, dict):
                current = target[key] = {}
            merge_patch(current, value)
        else:
            target[key] = copy.deepcopy(value)


class FakeCluster:
    """Objects keyed by (plural, namespace, name); namespace "" for cluster-scoped kinds."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.writes: list[tuple[str, str, str]] = []  # (verb, plural, name)
        self.calls: list[tuple[str, str]] = []  # (verb, plural), reads included
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.fail_on: dict[tuple[str, str], ClusterError] = {}  # (verb, plural or name)
        self._uids = itertools.count(1)
        self.status_subresource = False  # BSL status subresource, as some CRDs have
        self.events: list[Obj] = []  # events.k8s.io/v1 bodies, as KubeCluster would send
        self._objects_lock = threading.Lock()
        self._before: list[tuple[str, Kind | None, Hook]] = []

    # -- helpers for tests ----------------------------------------------------------------

    def add(self, kind: Kind, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        ns = meta.get("namespace", "") if kind.namespaced else ""
        self.objects[(kind.plural, ns, meta["name"])] = obj
        return obj

    def of(self, kind: Kind, namespace: str | None = None) -> dict[str, Obj]:
        return {
            name: obj
            for (plural, ns, name), obj in self.objects.items()
            if plural == kind.plural and (namespace is None or ns == namespace)
        }

    def before(self, verb: str, kind: Kind | None, fn: Hook) -> None:
        """Call ``fn`` at the start of every ``verb`` call ("list", "get", "create", "delete",
        "patch") on ``kind`` (None: on every kind), with that call's arguments as the port
        method got them; what ``fn`` raises is the call's answer. Hooks run on the caller's
        thread, in the order they were added."""
        self._before.append((verb, kind, fn))

    def _check(self, verb: str, kind: Kind, name: str, *args: Any) -> None:
        """Record the call, run its hooks with ``args``, raise its fault (by plural or by
        ``name``)."""
        self.calls.append((verb, kind.plural))
        for hook_verb, hook_kind, fn in self._before:
            if hook_verb == verb and hook_kind in (None, kind):
                fn(kind, *args)
        for key in ((verb, kind.plural), (verb, name)):
            if key in self.fail_on:
                raise self.fail_on[key]

    # -- the port -------------------------------------------------------------------------

    def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> Iterator[Obj]:
        self._check("list", kind, "", namespace, label_selector)
        items = [
            copy.deepcopy(obj)
            for (plural, ns, _), obj in self.objects.items()
            if plural == kind.plural
            and (not kind.namespaced or namespace is None or ns == namespace)
            and _matches(obj, label_selector)
        ]
        return iter(items)

    def get(self, kind: Kind, name: str, namespace: str | None) -> Obj | None:
        self._check("get", kind, name, name, namespace)
        obj = self.objects.get((kind.plural, namespace or "" if kind.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def create(self, kind: Kind, obj: Obj) -> Obj:
        meta = obj.get("metadata") or {}
        name = meta["name"]
        self._check("create", kind, name, obj)
        ns = meta.get("namespace", "") if kind.namespaced else ""
        key = (kind.plural, ns, name)
        with self._objects_lock:  # check-and-insert, atomic as on a real server
            return self._insert(kind, key, obj)

    def _insert(self, kind: Kind, key: tuple[str, str, str], obj: Obj) -> Obj:
        name = key[2]
        meta = obj.get("metadata") or {}
        if key in self.objects:
            raise AlreadyExists(f"{kind.kind} {name} already exists", 409)
        assert "resourceVersion" not in meta, "creates must not carry a resourceVersion"
        stored = copy.deepcopy(obj)
        stored["metadata"]["uid"] = f"uid-{next(self._uids)}"
        self.objects[key] = stored
        self.writes.append(("create", kind.plural, name))
        return copy.deepcopy(stored)

    def delete(self, kind: Kind, name: str, namespace: str | None) -> None:
        self._check("delete", kind, name, name, namespace)
        key = (kind.plural, namespace or "" if kind.namespaced else "", name)
        if self.objects.pop(key, None) is None:
            raise NotFound(f"{kind.kind} {name} not found", 404)
        self.writes.append(("delete", kind.plural, name))

    def patch_merge(
        self, kind: Kind, name: str, namespace: str | None, patch: Obj, subresource: str = ""
    ) -> Obj:
        self._check("patch", kind, name, name, namespace, patch, subresource)
        key = (kind.plural, namespace or "", name)
        if key not in self.objects:
            raise NotFound(f"{kind.kind} {name} not found", 404)
        obj = self.objects[key]
        if subresource == "status" or not self.status_subresource:
            merge_patch(obj, patch)
            self.writes.append(
                ("patch", kind.plural, name + (f"/{subresource}" if subresource else ""))
            )
        elif "status" in patch:
            # With a status subresource, the main resource ignores status changes.
            self.writes.append(("patch", kind.plural, name))
        return copy.deepcopy(obj)

    def create_event(self, body: Obj) -> None:
        self.calls.append(("create", "events"))
        if ("create", "events") in self.fail_on:
            raise self.fail_on[("create", "events")]
        self.events.append(copy.deepcopy(body))

    def read_secret(self, namespace: str, name: str, key: str) -> bytes:
        self._check("get", SECRET, name, name, namespace)
        data = self.secrets.get((namespace, name))
        if data is None:
            raise NotFound(f"secret {name} not found", 404)
        if key not in data:
            raise ConfigError(f'"{name}" secret is missing data for key "{key}"')
        return data[key]


class MemoryStore:
    """An ObjectStore over a dict of key → bytes."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})
        self.gets: list[str] = []
        self.lists = 0
        self.fail_list: StoreError | None = None
        self.fail_get: dict[str, StoreError] = {}

    def list_common_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        self.lists += 1
        if self.fail_list is not None:
            raise self.fail_list
        seen: set[str] = set()
        for key in sorted(self.objects):
            if key.startswith(prefix):
                rest = key[len(prefix) :]
                if delimiter in rest:
                    common = prefix + rest.split(delimiter, 1)[0] + delimiter
                    if common not in seen:
                        seen.add(common)
                        yield common

    def get(self, key: str, max_bytes: int) -> bytes | None:
        self.gets.append(key)
        if key in self.fail_get:
            raise self.fail_get[key]
        data = self.objects.get(key)
        if data is not None and len(data) > max_bytes:
            raise ObjectTooLarge(f"{key} is larger than {max_bytes} bytes")
        return data

    def close(self) -> None:
        pass


# -- bucket contents -----------------------------------------------------------------------------


class Bucket:
    """Writes Velero-layout objects into a MemoryStore."""

    def __init__(self, store: MemoryStore, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix

    def key(self, backup: str, file: str) -> str:
        return backup_key(self.prefix, backup, file)

    def put_backup(
        self,
        backup: Obj | str,
        pvbs: list[Obj] | None = None,
        vsclasses: list[Obj] | None = None,
        vscontents: list[Obj] | None = None,
    ) -> str:
        obj = stored_backup(backup) if isinstance(backup, str) else backup
        name: str = obj["metadata"]["name"]
        for file, data in backup_files(obj, pvbs, vsclasses, vscontents).items():
            self.store.objects[self.key(name, file)] = data
        return name

    def put_raw(self, backup: str, file: str, data: bytes) -> None:
        self.store.objects[self.key(backup, file)] = data
