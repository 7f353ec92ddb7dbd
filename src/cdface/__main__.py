"""`python -m cdface ...` (and `torchrun -m cdface train ...`)."""

from cdface.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
