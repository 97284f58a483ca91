"""`python -m balpoe`: the trainer alone, without Ray (see `balpoe.cli`)."""
import sys

from .cli import main

sys.exit(main())
