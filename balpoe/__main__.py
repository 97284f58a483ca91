"""`python -m balpoe`: the trainer alone, without Ray (see `balpoe.cli`)."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line still loads: nothing has been written
    print("\ninterrupted: nothing was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
