"""The benchmark: the worker against a real control plane and an S3 server behind
toxiproxy (``python -m bench``, ``make bench``; see bench/__main__.py)."""
