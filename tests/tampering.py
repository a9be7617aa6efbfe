"""Ways to tamper with an audit chain, each with the place ``audit_chain.verify`` must name (README
"Audit log").

A chain here is what the database holds: the records as rows (every stored column, in order of seq),
the signed checkpoints, the head, and the copy of the checkpoints in the external log. Each tampering
works on a copy and says where the first break is:

    flip        one value of one record changed (any column, seq/prev_hash/hash too)   that record*
    delete      one record removed                                                     its seq
    insert      a forged record put in at k, later records renumbered, the head moved    k, or k+1 where
                (its hash computed properly, or not)                                   the forger hashed it**
    swap        two records exchange places                                            the first of them
    truncate    the tail cut off, the head left                                        the first missing
    cut         the tail, the head and the checkpoints after it all cut off: only      the first missing
                the external log's checkpoints show it
    checkpoint  a checkpoint's signature, hash, time, key or seq changed, or re-signed the checkpoint's seq
                by another key
    rewrite     a record changed and every hash after it recomputed, the head too:     the first checkpoint
                only a signed checkpoint shows it                                      at or after it

 *  A changed seq moves the record: the break is at the lower of the old and the new seq.
 ** A properly hashed forgery follows its predecessor; the break is where the next record does not
    follow it ("record k+1: does not follow record k"), or at k where a checkpoint signed record k.

``tests/unit/test_audit_chain.py`` runs each kind on a synthetic chain;
``tests/integration/test_audit_log.py`` runs hundreds of seeded trials on a chain of real records
and a sample of them on the real database through ``intygstjanst verify-audit``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.store import audit_chain
from service.store.audit_chain import CHAIN_COLUMNS, Checkpoint, Head, Signer

Row = dict[str, Any]
KINDS = ("flip", "delete", "insert", "swap", "truncate", "cut", "checkpoint", "rewrite")


@dataclass
class Chain:
    records: list[Row]
    checkpoints: list[Checkpoint]
    head: Head
    logged: list[Checkpoint] = field(default_factory=list)

    def verdict(self, keys: Mapping[str, Any]) -> audit_chain.Verdict:
        ordered = sorted(self.checkpoints + self.logged, key=lambda c: c.seq)
        return audit_chain.verify(sorted(self.records, key=lambda r: r["seq"]), ordered, self.head, keys)


@dataclass(frozen=True)
class Tampering:
    kind: str
    description: str
    chain: Chain
    expected: int  # the place verify must name


def chain_of(contents: Sequence[Mapping[str, Any]], signer: Signer, *, every: int) -> Chain:
    """A chain built the way ``SqlAuditLog`` builds it, with a checkpoint every ``every`` records."""
    records: list[Row] = []
    checkpoints = []
    last = audit_chain.GENESIS
    for seq, content in enumerate(contents, start=1):
        digest = audit_chain.record_hash(last, content)
        records.append({**content, "seq": seq, "prev_hash": last, "hash": digest})
        if seq % every == 0:
            checkpoints.append(signer.sign(seq, digest, dt.datetime(2024, 5, 17, 9, 30)))
        last = digest
    return Chain(records, checkpoints, Head(len(records), last), logged=list(checkpoints))


def _flip_value(value: Any, rng: random.Random) -> Any:
    """The smallest change of a stored value: one bit of one character, of the seq, or of the time."""
    if value is None:
        return "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value ^ (1 << rng.randrange(9))
    if isinstance(value, dt.datetime):
        return value + dt.timedelta(seconds=1 << rng.randrange(20))
    if isinstance(value, str):
        if not value:
            return "0"
        at = rng.randrange(len(value))
        while True:
            flipped = chr(ord(value[at]) ^ (1 << rng.randrange(7)))
            if flipped != "\x00":  # PostgreSQL's text holds any character but NUL
                return value[:at] + flipped + value[at + 1 :]
    raise TypeError(type(value))


def _rehash_from(records: list[Row], index: int) -> None:
    last = records[index - 1]["hash"] if index else audit_chain.GENESIS
    for row in records[index:]:
        row["prev_hash"] = last
        row["hash"] = audit_chain.record_hash(last, row)
        last = row["hash"]


def flip(chain: Chain, rng: random.Random) -> Tampering:
    records = copy.deepcopy(chain.records)
    row = rng.choice(records)
    seq = row["seq"]
    column = rng.choice(sorted(row))
    row[column] = _flip_value(row[column], rng)
    expected = min(seq, row["seq"]) if column == "seq" else seq
    return Tampering(
        "flip", f"flip {column} of record {seq}", dataclasses.replace(chain, records=records), expected
    )


def delete(chain: Chain, rng: random.Random) -> Tampering:
    records = copy.deepcopy(chain.records)
    seq = rng.randrange(1, len(records) + 1)
    del records[seq - 1]
    return Tampering("delete", f"delete record {seq}", dataclasses.replace(chain, records=records), seq)


def insert(chain: Chain, rng: random.Random) -> Tampering:
    records = copy.deepcopy(chain.records)
    at = rng.randrange(1, len(records) + 2)  # before record ``at``; past the end too
    forged = {k: v for k, v in rng.choice(records).items() if k not in CHAIN_COLUMNS}
    column = rng.choice(sorted(forged))
    forged[column] = _flip_value(forged[column], rng)
    prev = records[at - 2]["hash"] if at > 1 else audit_chain.GENESIS
    hashed = rng.random() < 0.5
    digest = audit_chain.record_hash(prev, forged) if hashed else f"{rng.getrandbits(256):064x}"
    for row in records[at - 1 :]:
        row["seq"] += 1
    records.insert(at - 1, {**forged, "seq": at, "prev_hash": prev, "hash": digest})
    # Inside the chain the forger moves the head along; past its end, the head was left behind.
    head = Head(chain.head.seq + 1, chain.head.hash) if at <= len(chain.records) else chain.head
    # A properly hashed forgery follows its predecessor: the next record is the first that does not
    # follow, unless a checkpoint signed the original record's hash at ``at``.
    sealed = {c.seq for c in chain.checkpoints + chain.logged}
    expected = at + 1 if hashed and at <= len(chain.records) and at not in sealed else at
    how = "hashed" if hashed else "unhashed"
    return Tampering(
        "insert",
        f"insert a forged {how} record at {at}",
        dataclasses.replace(chain, records=records, head=head),
        expected,
    )


def swap(chain: Chain, rng: random.Random) -> Tampering:
    records = copy.deepcopy(chain.records)
    first, second = sorted(rng.sample(range(len(records)), 2))
    for row, seq in ((records[second], first + 1), (records[first], second + 1)):
        row["seq"] = seq
    records[first], records[second] = records[second], records[first]
    return Tampering(
        "swap",
        f"swap records {first + 1} and {second + 1}",
        dataclasses.replace(chain, records=records),
        first + 1,
    )


def truncate(chain: Chain, rng: random.Random) -> Tampering:
    keep = rng.randrange(len(chain.records))
    records = copy.deepcopy(chain.records[:keep])
    return Tampering(
        "truncate", f"cut the records after {keep}", dataclasses.replace(chain, records=records), keep + 1
    )


def cut(chain: Chain, rng: random.Random) -> Tampering:
    """Everything the database holds after ``keep`` goes, the head is set back: the log remembers."""
    newest_logged = max(c.seq for c in chain.logged)
    keep = rng.randrange(newest_logged)
    records = copy.deepcopy(chain.records[:keep])
    head = Head(keep, records[-1]["hash"] if records else audit_chain.GENESIS)
    checkpoints = [c for c in chain.checkpoints if c.seq <= keep]
    return Tampering(
        "cut",
        f"cut records, head and checkpoints after {keep}",
        dataclasses.replace(chain, records=records, head=head, checkpoints=checkpoints),
        keep + 1,
    )


def checkpoint(chain: Chain, rng: random.Random) -> Tampering:
    checkpoints = list(chain.checkpoints)
    index = rng.randrange(len(checkpoints))
    original = checkpoints[index]
    what = rng.choice(("signature", "hash", "at", "key_id", "seq", "re-signed"))
    if what == "re-signed":
        # Another key signs the forged hash; the forger keeps the real key's id.
        forger = Signer(Ed25519PrivateKey.generate())
        forged = forger.sign(original.seq, _flip_value(original.hash, rng), original.at)
        changed = dataclasses.replace(forged, key_id=original.key_id)
    else:
        changed = dataclasses.replace(original, **{what: _flip_value(getattr(original, what), rng)})
    checkpoints[index] = changed
    return Tampering(
        "checkpoint",
        f"change the {what} of the checkpoint at {original.seq}",
        dataclasses.replace(chain, checkpoints=checkpoints),
        changed.seq,
    )


def rewrite(chain: Chain, rng: random.Random) -> Tampering:
    newest = max(c.seq for c in chain.checkpoints)
    records = copy.deepcopy(chain.records)
    seq = rng.randrange(1, newest + 1)
    row = records[seq - 1]
    column = rng.choice(sorted(k for k in row if k not in CHAIN_COLUMNS))
    row[column] = _flip_value(row[column], rng)
    _rehash_from(records, seq - 1)
    head = Head(len(records), records[-1]["hash"])
    expected = min(c.seq for c in chain.checkpoints if c.seq >= seq)
    return Tampering(
        "rewrite",
        f"rewrite {column} of record {seq} and rehash the rest",
        dataclasses.replace(chain, records=records, head=head),
        expected,
    )


TAMPER: dict[str, Callable[[Chain, random.Random], Tampering]] = {
    "flip": flip,
    "delete": delete,
    "insert": insert,
    "swap": swap,
    "truncate": truncate,
    "cut": cut,
    "checkpoint": checkpoint,
    "rewrite": rewrite,
}


def storable(tampering: Tampering) -> bool:
    """Whether a database with its primary keys could hold the tampered chain (no seq twice)."""
    seqs = [row["seq"] for row in tampering.chain.records]
    sealed = [c.seq for c in tampering.chain.checkpoints]
    return len(set(seqs)) == len(seqs) and len(set(sealed)) == len(sealed)
