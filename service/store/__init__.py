"""The SQL store. Which work runs its statements, for the statement counter (``metrics.DB_STATEMENTS``).

A request's statements are counted as ``request``; work outside requests (the store gauges, the audit
sealer, migrations at start) runs inside ``background()``. A context variable, not an argument: the counter is an engine
event, which sees no caller, and asyncio copies the context into each task, so a loop that sets it
marks only its own statements.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Source(enum.StrEnum):
    REQUEST = "request"
    BACKGROUND = "background"


_source: ContextVar[Source] = ContextVar("statement_source", default=Source.REQUEST)


def source() -> Source:
    """Who runs the statement being executed now."""
    return _source.get()


@contextmanager
def background() -> Iterator[None]:
    """Statements run inside the block are background work's, not a request's."""
    token = _source.set(Source.BACKGROUND)
    try:
        yield
    finally:
        _source.reset(token)
