"""backup-sync: Velero's backup sync as a single-shot worker."""

__version__ = "0.1.0"
