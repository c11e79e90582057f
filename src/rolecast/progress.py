"""Progress bars for the long stages (eval's variants, the retrieval index), on a terminal only.

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


def bar(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a transient bar (items done, rate, time left) when ``enabled()``."""
    if not enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True, console=Console(stderr=True))
