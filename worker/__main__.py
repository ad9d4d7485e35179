"""`python -m worker` is the same as the `backup-sync` console script."""

from worker.cli import main

raise SystemExit(main())
