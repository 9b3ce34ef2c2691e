"""Allow `python -m beatd`."""

from beatd.cli import main

raise SystemExit(main())
