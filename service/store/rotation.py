"""Key rotation (README "Data at rest", Rotating the KEK): every data key not wrapped under the current KEK is
re-wrapped under it, while the service keeps serving (``intygstjanst rotate-kek``).

Only the wrapped data keys change; the data keys, and so every ciphertext, stay as they are. Each
batch is a short transaction of its own that locks its rows (FOR UPDATE on PostgreSQL; SQLite takes
its write lock at BEGIN), so a read meanwhile sees a row either wholly before or wholly after it:
both KEKs are in the service's key ring during a rotation, so either opens. Batches walk the
certificates by id, each one reading from where the last stopped, so a rotation reads the table once.

The procedure: add the new KEK to the keys file as current, keeping the old one; restart (roll) the
service so that it writes under the new KEK and still reads the old; run ``rotate-kek``; remove the
old KEK once it reports none remaining.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.errors import KekMissing
from service.store.crypto import KeyRing, WrappedKey
from service.store.tables import certificates

log = logging.getLogger("service.store")

BATCH = 200


@dataclass(frozen=True, slots=True)
class Rotation:
    rewrapped: int
    remaining: int  # data keys still under another KEK (written meanwhile by an instance not yet rolled)


async def under_other_keks(engine: AsyncEngine, keyring: KeyRing) -> dict[str, int]:
    """How many data keys each KEK other than the current one wraps."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(certificates.c.kek_id, func.count())
            .where(certificates.c.kek_id != keyring.current)
            .group_by(certificates.c.kek_id)
        )
        return {kek_id: int(n) for kek_id, n in rows}


async def rewrap_batch(
    engine: AsyncEngine, keyring: KeyRing, *, after: str, limit: int = BATCH
) -> tuple[int, str] | None:
    """Re-wrap the next ``limit`` data keys (by certificate id, after ``after``) that are not under the
    current KEK, in one transaction. Returns how many and the last id, or None when there were none."""
    async with engine.begin() as connection:
        rows = (
            await connection.execute(
                select(certificates.c.id, certificates.c.kek_id, certificates.c.wrapped_data_key)
                .where(certificates.c.id > after, certificates.c.kek_id != keyring.current)
                .order_by(certificates.c.id)
                .limit(limit)
                .with_for_update()
            )
        ).all()
        if not rows:
            return None
        rewrapped = []
        for row in rows:
            data_key = keyring.unwrap(row.id, WrappedKey(row.kek_id, row.wrapped_data_key))
            wrapped = keyring.wrap(row.id, data_key)
            rewrapped.append(
                {"row_id": row.id, "kek_id": wrapped.kek_id, "wrapped_data_key": wrapped.wrapped}
            )
        await connection.execute(
            update(certificates).where(certificates.c.id == bindparam("row_id")), rewrapped
        )
        last: str = rows[-1].id
        return len(rows), last


async def rotate(engine: AsyncEngine, keyring: KeyRing, *, batch_size: int = BATCH) -> Rotation:
    """Re-wrap every data key under the current KEK. Refuses before changing anything where a data
    key is under a KEK the key ring lacks (``KekMissing``, naming the KEK and how many)."""
    missing = {k: n for k, n in (await under_other_keks(engine, keyring)).items() if k not in keyring.keks}
    if missing:
        named = ", ".join(f"{n} under {k!r}" for k, n in sorted(missing.items()))
        raise KekMissing(
            f"data keys are wrapped under KEKs that are not configured ({named}): "
            "add them to the keys file (decrypt-only) and run again"
        )
    rewrapped = 0
    after = ""
    while (batch := await rewrap_batch(engine, keyring, after=after, limit=batch_size)) is not None:
        count, after = batch
        rewrapped += count
    remaining = sum((await under_other_keks(engine, keyring)).values())
    log.info(
        "data keys re-wrapped under the current KEK: %d; under other KEKs still: %d", rewrapped, remaining
    )
    return Rotation(rewrapped, remaining)
