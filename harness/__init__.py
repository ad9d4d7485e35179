"""Test and demo harness: real servers (Kubernetes control plane, object stores) for backup-sync."""
