"""Allow ``python -m sequent``."""

from sequent.cli import main

raise SystemExit(main())
