"""Velero version profiles: the sync behaviour that changed between Velero 1.15 and 1.18.

The Backups this worker creates are read by the user's own Velero server, so it syncs the
way that server's version does (each difference, its Velero pull request and its test:
``docs/velero-differences.md``; checked in the Velero module sources).
``--velero-version auto`` reads the image tag of the Velero Deployment; when it cannot, it
falls back to the oldest supported line and says so in the summary.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker import velero
from worker.errors import ClusterError, ConfigError

Version = tuple[int, int, int]

OLDEST: Version = (1, 15, 0)
NEWEST: Version = (1, 18, 3)  # the newest release whose sync path was checked
NEXT_MINOR: Version = (1, 19, 0)  # not supported yet: its sync path is unchecked
SUPPORTED = "1.15 to 1.18.x"
AUTO = "auto"

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
# An image tag such as v1.17.1, 1.17.1, v1.18.0-rc.1 or v1.16.2-amd64.
_TAG_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+._][0-9A-Za-z.+-]*)?")


def shown(version: Version) -> str:
    return ".".join(str(part) for part in version)


@dataclass(frozen=True, slots=True)
class VeleroProfile:
    """What the sync does differently for one Velero version, and where that version came
    from (for the summary)."""

    version: Version = OLDEST
    source: str = "default"

    @property
    def name(self) -> str:
        return shown(self.version)

    @property
    def syncs_snapshot_contents(self) -> bool:
        """Velero 1.16.0 (#8684) stopped syncing VolumeSnapshotContents."""
        return self.version < (1, 16, 0)

    @property
    def syncs_snapshot_classes(self) -> bool:
        """Velero 1.18.0 (#9431) stopped syncing VolumeSnapshotClasses."""
        return self.version < (1, 18, 0)

    @property
    def cleans_up_csi_of_orphans(self) -> bool:
        """Before 1.18.0, deleting an orphaned Backup also deleted its VolumeSnapshots and
        VolumeSnapshotContents (#9431 removed that)."""
        return self.version < (1, 18, 0)

    @property
    def requires_available_location(self) -> bool:
        """From 1.16.2 and 1.17.0 (#8976, #9010) a location whose ``status.phase`` is not
        ``Available`` is skipped: nothing listed, deleted or patched."""
        return self.version >= (1, 16, 2)

    @property
    def honours_ca_cert_ref(self) -> bool:
        """1.18.0 (#9141): ``objectStorage.caCertRef``, a Secret key selector."""
        return self.version >= (1, 18, 0)

    @property
    def clears_hooks(self) -> bool:
        """1.18.3 (#10347): ``spec.hooks`` is cleared on the synced Backup, so this
        cluster's Velero never runs a bucket's hooks."""
        return self.version >= (1, 18, 3)

    @property
    def azure_username_password(self) -> bool:
        """``AZURE_USERNAME``/``AZURE_PASSWORD`` credentials were removed in 1.17.0."""
        return self.version < (1, 17, 0)


# Without --velero-version or a readable Velero Deployment: the oldest supported line.
DEFAULT_PROFILE = VeleroProfile()


def parse_version(text: str) -> Version:
    """``X.Y`` or ``X.Y.Z`` (a leading ``v`` allowed) within the supported range; ``X.Y``
    means ``X.Y.0``. Raises ConfigError."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(
            f"--velero-version {text!r}: expected 'auto' or a version X.Y[.Z] from {SUPPORTED}"
        )
    major, minor, patch = match.groups()
    version = (int(major), int(minor), int(patch or 0))
    if not OLDEST <= version < NEXT_MINOR:
        raise ConfigError(
            f"--velero-version {text!r}: this worker syncs like Velero {SUPPORTED}; "
            f"{shown(version)} is not one of them"
        )
    return version


def explicit(text: str) -> VeleroProfile:
    return VeleroProfile(parse_version(text), "--velero-version")


def version_of_image(image: str) -> Version | None:
    """The version in an image reference's tag (``velero/velero:v1.17.1``,
    ``registry:5000/velero/velero:v1.17.1@sha256:…``), or None for a digest-only or
    non-version tag."""
    reference = image.split("@", 1)[0]
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:  # no tag at all (the colon was a registry port)
        return None
    match = _TAG_VERSION.fullmatch(tag)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return (major, minor, patch)


def velero_image(deployment: dict[str, Any]) -> str | None:
    """The image of the Deployment's ``velero`` container (else its only container)."""
    pod = velero.spec(velero.spec(deployment).get("template") or {})
    containers = [c for c in pod.get("containers") or [] if isinstance(c, dict)]
    for container in containers:
        if container.get("name") == velero.VELERO_CONTAINER:
            return str(container.get("image") or "") or None
    if len(containers) == 1:
        return str(containers[0].get("image") or "") or None
    return None


def detect(
    read_deployment: Callable[[], dict[str, Any] | None], deployment: str, namespace: str
) -> VeleroProfile:
    """``auto``: the version of the Velero Deployment's image, else the 1.15 profile with
    the reason. ``read_deployment`` returns None when there is no such Deployment and
    raises ClusterError when it cannot be read."""
    where = f"Deployment {namespace}/{deployment}"
    fallback = f"profile {shown(OLDEST)}, the oldest supported"
    try:
        found = read_deployment()
    except ClusterError as exc:
        return VeleroProfile(OLDEST, f"auto: cannot read {where} ({exc}); {fallback}")
    if found is None:
        return VeleroProfile(OLDEST, f"auto: no {where}; {fallback}")
    image = velero_image(found)
    if image is None:
        return VeleroProfile(OLDEST, f"auto: no velero container in {where}; {fallback}")
    version = version_of_image(image)
    if version is None:
        return VeleroProfile(
            OLDEST, f"auto: image {image} of {where} names no version tag; {fallback}"
        )
    source = f"auto: image {image} of {where}"
    if version < OLDEST:
        return VeleroProfile(OLDEST, f"{source}, older than {shown(OLDEST)}; {fallback}")
    if version >= NEXT_MINOR:
        return VeleroProfile(
            NEWEST, f"{source}, newer than {SUPPORTED}; profile {shown(NEWEST)}, the newest"
        )
    return VeleroProfile(version, source)
