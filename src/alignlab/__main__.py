"""Allow ``python -m alignlab``."""

from alignlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
