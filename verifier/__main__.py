"""``python -m verifier`` is ``pocv``."""

from verifier.cli import main

raise SystemExit(main())
