"""How every benchmark answers a mistake in its arguments: like the toolkit's commands, one line
`error: <option>: <what is wrong> (got …)` and exit status 2, before anything is measured. (argparse
itself answers malformed ones — an unknown option, a word for a number — also with exit status 2.)"""
from __future__ import annotations

import sys


def refuse(option: str, problem: str, value) -> None:
    print(f"error: {option}: {problem} (got {value!r})", file=sys.stderr)
    raise SystemExit(2)


def at_least(minimum: float, **values) -> None:
    """Each `option_name=value` (None: not given) must be >= `minimum`; `max_images` is `--max-images`."""
    for name, value in values.items():
        if value is not None and not value >= minimum:
            refuse("--" + name.replace("_", "-"), f"must be >= {minimum:g}", value)
