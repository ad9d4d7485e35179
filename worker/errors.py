"""The few error types the algorithm understands, each with its exit-code meaning.

SDK and HTTP errors are translated into these at the boundary where they are understood
(storage providers, the Kubernetes adapter), so the sync algorithm never inspects status codes.
"""

from __future__ import annotations


class ConfigError(Exception):
    """Usage or configuration error: bad flag, bad duration, unknown config key (exit 2)."""


class LocationError(Exception):
    """A whole location cannot be synced: store unreachable, listing failed (exit 1)."""


class Interrupted(LocationError):
    """A termination request (SIGTERM, SIGINT) stopped the sync of a location (exit 1)."""


class StoreError(LocationError):
    """An object-store call failed for a reason other than "absent" (after retries)."""


class ItemError(Exception):
    """One object (backup, pod volume backup, CSI object) could not be synced (exit 3)."""


class ObjectTooLarge(ItemError):
    """An object in the bucket is larger than the cap for its kind."""


class ClusterError(Exception):
    """A Kubernetes API call failed (after retries) for a reason the caller did not expect."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(ClusterError):
    """The API object does not exist (HTTP 404)."""


class AlreadyExists(ClusterError):
    """The API object already exists (HTTP 409 on create)."""
