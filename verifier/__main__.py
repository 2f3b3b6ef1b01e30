"""``python -m pocv`` is ``pocv``."""

from pocv.cli import main

raise SystemExit(main(None))
