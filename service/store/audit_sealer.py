"""The audit log's sealer (README "Audit log"): chains committed records after commit, off every request's
path.

A request inserts its audit record in the transaction of its effect (STYLE.md, Audit) and takes no
lock any other request needs: the record is stored with an ``id`` only. The sealer then gives the
records their places in the hash chain (``audit_chain``) and signs checkpoints, in short transactions
of its own, like the sequencer of a transparency log.

Why the order it builds is total and never rewritten:

- A pass locks the head row (only sealers ever touch it), reads the records that have no place yet
  (``seq IS NULL``, a partial index keeps that list small) in order of ``id``, and gives them the
  places after the head's, in the same transaction that moves the head. Places are only ever added
  after the head, so no record can appear before one already sealed, and a checkpoint signs a prefix
  that never changes again.
- A record is found by having no place, not by being above some id. Ids are taken when a row is
  inserted, not when its transaction commits: a transaction that took id 100 and commits after
  id 101 was sealed is found by the next pass and placed after 101, never skipped. A record that
  is not committed yet is not visible to the pass, so it is neither placed nor waited for.
- Every committed record is placed exactly once: a pass places only rows still without a place and
  moves the head under its lock, so two passes (two sealers by mistake, or a pass on SQLite in every
  worker) run one after the other, and the second finds what the first placed already placed. A pass
  that fails or dies rolls back whole: nothing half-placed, and the next pass starts from the head.

Exactly one sealer works at a time across processes and replicas on PostgreSQL: the one elected by
the advisory lock ``_SEALER_LOCK`` (``election.py``). The others stand by and try again every
``_STANDBY_SECONDS``. On SQLite every pass takes the one write lock at BEGIN IMMEDIATE, which
serialises passes just as well.

The tamper-evidence window is the seal lag (how long a record waits for its place; the metrics
``intyg_audit_unsealed_*`` and ``intyg_audit_seal_lag_seconds`` show it) plus the checkpoint interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service import metrics
from service.store import audit_chain, background, election
from service.store.election import Target, connected
from service.store.tables import audit_checkpoints, audit_head, audit_records

log = logging.getLogger("service.audit")

# Records placed per pass: a pass stays short (it holds SQLite's write lock, and the sealer's head
# lock on PostgreSQL); a full batch is followed by another pass at once.
BATCH = 1000
# The advisory lock that elects the sealer: any fixed 64-bit number no other user of the database
# takes ("intyg-seal" in ASCII).
_SEALER_LOCK = 0x696E7479672D7365
# How often a standing-by sealer tries to take over.
_STANDBY_SECONDS = 1.0

_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
_UNSEALED = select(audit_records).where(audit_records.c.seq.is_(None)).order_by(audit_records.c.id)
_PLACE = (
    update(audit_records)
    .where(audit_records.c.id == bindparam("record_id"), audit_records.c.seq.is_(None))
    .values(seq=bindparam("place"), prev_hash=bindparam("previous"), hash=bindparam("digest"))
)
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == 1)
_NEWEST_CHECKPOINT = select(func.max(audit_checkpoints.c.seq))
_TAIL = select(func.count(), func.min(audit_records.c.at)).where(audit_records.c.seq.is_(None))


@dataclass(frozen=True, slots=True)
class Pass:
    """What one pass did: the head it left, when the records it placed were written, the checkpoints
    it signed, and whether its batch was full (more may be waiting)."""

    head: audit_chain.Head
    written: tuple[dt.datetime, ...]
    checkpoints: tuple[audit_chain.Checkpoint, ...]
    full: bool


async def seal(
    connection: AsyncConnection,
    *,
    signer: audit_chain.Signer | None,
    now: dt.datetime,
    checkpoint_every: int,
    sign_head: bool = False,
    limit: int = BATCH,
) -> Pass:
    """One pass in the caller's transaction (it never commits): place up to ``limit`` unsealed records
    after the head, sign a checkpoint at each place that is a multiple of ``checkpoint_every``, and,
    with ``sign_head``, at the new head if no checkpoint signs it yet. Without a signer the records are
    chained all the same and a later pass with one signs."""
    found = (await connection.execute(_HEAD)).first()
    if found is None:
        raise RuntimeError("the audit chain has no head: the database is not migrated, or damaged")
    rows = (await connection.execute(_UNSEALED.limit(limit))).mappings().all()
    links = list(audit_chain.link(found.seq, found.hash, rows))
    head = (
        audit_chain.Head(links[-1].seq, links[-1].hash) if links else audit_chain.Head(found.seq, found.hash)
    )
    checkpoints = []
    if signer is not None:
        checkpoints = [signer.sign(k.seq, k.hash, now) for k in links if k.seq % checkpoint_every == 0]
    if links:
        await connection.execute(
            _PLACE,
            [{"record_id": k.id, "place": k.seq, "previous": k.prev_hash, "digest": k.hash} for k in links],
        )
        await connection.execute(_MOVE_HEAD, {"seq": head.seq, "hash": head.hash})
    if signer is not None and sign_head and head.seq > 0:
        newest = checkpoints[-1].seq if checkpoints else await connection.scalar(_NEWEST_CHECKPOINT)
        if newest is None or newest < head.seq:
            checkpoints.append(signer.sign(head.seq, head.hash, now))
    if checkpoints:
        await connection.execute(
            insert(audit_checkpoints),
            [
                {"seq": c.seq, "hash": c.hash, "at": c.at, "key_id": c.key_id, "signature": c.signature}
                for c in checkpoints
            ],
        )
    return Pass(head, tuple(row["at"] for row in rows), tuple(checkpoints), full=len(rows) == limit)


async def unsealed_tail(connection: AsyncConnection) -> tuple[int, dt.datetime | None]:
    """How many records wait for their place, and when the oldest of them was written."""
    count, oldest = (await connection.execute(_TAIL)).one()
    return int(count), oldest


def log_checkpoint(checkpoint: audit_chain.Checkpoint) -> None:
    """One JSON log event per committed checkpoint. The external log store keeps a copy the database
    cannot rewrite (``intygstjanst verify-audit --checkpoint-log``); it names places and hashes only,
    never a person or a record's content."""
    log.info("audit checkpoint", extra={"event": "audit_checkpoint", **checkpoint.as_logged()})


class Sealer:
    """The background job that keeps the chain sealed (``run``); ``seal_once`` seals what is left, as
    ``run`` does when it stops. ``every``: seconds between passes; ``checkpoint_seconds``: the longest a
    sealed head waits for a signed checkpoint while records keep coming."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        signer: audit_chain.Signer | None,
        clock: Callable[[], dt.datetime],
        checkpoint_every: int,
        checkpoint_seconds: float,
        every: float,
    ) -> None:
        self._engine = engine
        self._signer = signer
        self._clock = clock
        self._checkpoint_every = checkpoint_every
        self._checkpoint_seconds = checkpoint_seconds
        self._every = every
        self._signed = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        """Seal while elected, stand by otherwise, until ``stop`` is set; then seal what is left, the
        head signed, so the last records served get their checkpoint before the process goes. Never
        cancelled inside a transaction: it looks at ``stop`` only between passes."""
        with background():  # its statements are counted as no request's
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self._elected() as target:
                    if target is None:
                        await self._measure(self._engine)
                        await _wait(stop, _STANDBY_SECONDS)
                        continue
                    metrics.AUDIT_SEALER_ELECTED.set(1)
                    while not stop.is_set():
                        sealed = await self._pass(target, sign_head=self._checkpoint_due())
                        await self._measure(target)
                        if not sealed.full:
                            await _wait(stop, self._every)
                    await self._finish(target)
                    return
            except Exception as exc:  # the next round tries again; the service goes on
                log.warning("audit chain not sealed: %s", type(exc).__name__)
                await _wait(stop, self._every)
            finally:
                metrics.AUDIT_SEALER_ELECTED.set(0)
        await self.seal_once()

    async def seal_once(self) -> None:
        """Seal everything unsealed and sign the head, if this process can be the sealer now (else the
        one that is sealer does it)."""
        try:
            async with self._elected() as target:
                if target is not None:
                    await self._finish(target)
        except Exception as exc:
            log.warning("audit chain not sealed: %s", type(exc).__name__)

    async def _finish(self, target: Target) -> None:
        while (await self._pass(target, sign_head=True)).full:
            pass
        await self._measure(target)

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._signed >= self._checkpoint_seconds

    async def _pass(self, target: Target, *, sign_head: bool) -> Pass:
        now = self._clock()
        async with connected(target) as connection, connection.begin():
            sealed = await seal(
                connection,
                signer=self._signer,
                now=now,
                checkpoint_every=self._checkpoint_every,
                sign_head=sign_head,
            )
        # Logged and counted only once committed: a checkpoint rolled back must never reach the log.
        for checkpoint in sealed.checkpoints:
            log_checkpoint(checkpoint)
        if sealed.checkpoints:
            self._signed = time.monotonic()
        for written in sealed.written:
            metrics.AUDIT_SEAL_LAG.observe(max(0.0, (now - written).total_seconds()))
        return sealed

    async def _measure(self, target: Target) -> None:
        async with connected(target) as connection:
            count, oldest = await unsealed_tail(connection)
            await connection.commit()
        metrics.AUDIT_UNSEALED.set(count)
        age = 0.0 if oldest is None else max(0.0, (self._clock() - oldest).total_seconds())
        metrics.AUDIT_UNSEALED_AGE.set(age)

    def _elected(self) -> contextlib.AbstractAsyncContextManager[Target | None]:
        """What to seal on while this process is the sealer, None while another one is: on PostgreSQL
        the connection that holds the lock; on SQLite the engine, whose one connection each pass takes
        from the pool and gives back, so that requests are not kept waiting between passes."""
        return election.elected(self._engine, _SEALER_LOCK)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
