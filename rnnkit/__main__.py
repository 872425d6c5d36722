"""``python -m rnnkit``: the same command line as ``rnnkit``."""

from rnnkit.cli import main

raise SystemExit(main())
