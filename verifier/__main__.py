"""``python -m verifier`` is ``pocv``."""

from pocv.cli import main

raise SystemExit(main())
