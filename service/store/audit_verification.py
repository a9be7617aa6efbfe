"""Reads the stored audit chain for ``intygstjanst verify-audit`` (README "Audit log") and has
``audit_chain`` judge it.

Offline and read-only: a synchronous engine (the command runs outside any event loop), one snapshot
(a record committed meanwhile cannot look like a record beyond the head), and the records streamed in
order of seq, never all in memory. Records not sealed yet (``audit_sealer``) are read last, in
order of id, as the unsealed tail. Checkpoints copied from the service's log (``log_checkpoint``)
can be added: they anchor the chain where the database's own checkpoints and head were cut off too.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import ColumnElement, Connection, CursorResult, Engine, Select, create_engine, event, select
from sqlalchemy.engine import make_url

from service.store import audit_chain
from service.store.tables import audit_checkpoints, audit_head, audit_records

# Rows fetched per round trip.
_BATCH = 5000


def _engine(url: str) -> Engine:
    """A read-only synchronous engine on the service's database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Read-only by URI: a mistyped path fails instead of creating an empty database.
        path = quote(parsed.database or "")
        engine = create_engine(f"sqlite+pysqlite:///file:{path}?mode=ro&uri=true")

        @event.listens_for(engine, "connect")
        def _manual(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _snapshot(connection: Connection) -> None:
            # The read transaction SQLite's driver would not begin on its own: one snapshot for all reads.
            connection.exec_driver_sql("BEGIN")

        return engine
    return create_engine(
        parsed, execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    )


def _streamed(connection: Connection, query: Select[Any], order: ColumnElement[Any]) -> CursorResult[Any]:
    """``query`` in ``order``, fetched ``_BATCH`` rows a round trip."""
    return connection.execute(query.order_by(order).execution_options(yield_per=_BATCH))


def _checkpoints(rows: Iterable[Any]) -> Iterator[audit_chain.Checkpoint]:
    for row in rows:
        yield audit_chain.Checkpoint(row.seq, row.hash, row.at, row.key_id, row.signature)


def logged_checkpoints(path: Path) -> list[audit_chain.Checkpoint]:
    """The checkpoints in a copy of the service's JSON log; other lines are passed over. A forged line
    gains nothing: each checkpoint is checked against its signature."""
    found = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                event_ = json.loads(line)
                if isinstance(event_, dict) and event_.get("event") == "audit_checkpoint":
                    found.append(audit_chain.Checkpoint.from_logged(event_))
            except ValueError:
                continue
    return sorted(found, key=lambda checkpoint: checkpoint.seq)


def verify_database(
    url: str, keys: Mapping[str, Ed25519PublicKey], *, logged: Iterable[audit_chain.Checkpoint] = ()
) -> audit_chain.Verdict:
    """The verdict on the chain stored at ``url``, with the checkpoints ``logged`` besides the stored ones."""
    engine = _engine(url)
    try:
        with engine.connect() as connection, connection.begin():
            found = connection.execute(
                select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
            ).first()
            head = None if found is None else audit_chain.Head(found.seq, found.hash)
            # Closed when left, also where the verdict came before their end (server-side cursors).
            with (
                _streamed(
                    connection,
                    select(audit_records).where(audit_records.c.seq.is_not(None)),
                    audit_records.c.seq,
                ) as records,
                _streamed(connection, select(audit_checkpoints), audit_checkpoints.c.seq) as stored,
                _streamed(
                    connection, select(audit_records).where(audit_records.c.seq.is_(None)), audit_records.c.id
                ) as unsealed,
            ):
                checkpoints = heapq.merge(_checkpoints(stored), logged, key=lambda checkpoint: checkpoint.seq)
                return audit_chain.verify(
                    (row._mapping for row in records),
                    checkpoints,
                    head,
                    keys,
                    unsealed=(row._mapping for row in unsealed),
                )
    finally:
        engine.dispose()
