"""Progress bars for the long stages (eval's variants, the retrieval index), on a terminal only; ``say`` for the
one line a long stage announces itself with (train: what an epoch will take).

    for case in bar(cases, f"eval {name}"):
        ...

A bar is drawn on stderr when it is a terminal and the CLI is not quiet (``-q``); in a
pipe, a test or a log file nothing is drawn, so output stays clean.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    """Whether to draw: stderr is a terminal and rolecast's log level lets warnings through."""
    return sys.stderr.isatty() and logging.getLogger("rolecast").getEffectiveLevel() <= logging.WARNING


def say(message: str) -> None:
    """One line of the command's own output on stderr (what a long stage is about to do), unless quiet (-q)."""
    if logging.getLogger("rolecast").getEffectiveLevel() <= logging.WARNING:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def bar(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a transient bar (items done, rate, time left) when ``enabled()``."""
    if not enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True, console=Console(stderr=True))
