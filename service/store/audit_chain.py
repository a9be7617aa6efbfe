"""The audit log's hash chain and its signed checkpoints (README.md, "Audit log"). Pure: no I/O, no clock.

Every audit record holds ``seq`` (its place: 1, 2, 3 ... without gaps), ``prev_hash`` (the hash of
the record before it; ``GENESIS`` for the first) and ``hash``: SHA-256 over a versioned prefix, the
previous hash and a canonical encoding of every other stored value of the record. Changing, removing,
inserting or reordering a record therefore breaks the chain at that place. The one-row head names
the last record, so that cutting off the tail shows too.

Anyone who can write the database and knows this module could rewrite the chain from some record
onwards. A checkpoint, signed with an Ed25519 key the database never holds, fixes the hash at a
``seq``: a rewrite is caught at the first checkpoint at or after the rewritten record, and a copy of
each checkpoint in the external log store (``repositories.log_checkpoint``) anchors the chain beyond
the database's own reach. Only records after the newest checkpoint are unprotected against a rewrite
by someone who can also rewrite the head; the periodic sealer (``app.py``) keeps that window short.

Records are written unsealed, in the transactions of their effects, and chained after commit by the
sealer (``audit_sealer``): until then a record is in the unsealed tail, which the verifier
counts and checks for form only. The sealer, the migrations that chain older records, and the verifier
(``intygstjanst verify-audit``) share these functions.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.store.tables import audit_records

# The hash before the first record.
GENESIS: Final = "0" * 64
# The columns that place a record in the chain; every other stored column is hashed. ``id`` only
# orders the unsealed tail for the sealer: once sealed, ``seq`` is the record's place.
CHAIN_COLUMNS: Final = frozenset({"id", "seq", "prev_hash", "hash"})
# Versioned domain prefixes: a record hash can never be read as a checkpoint's signed bytes, and a
# later encoding gets a new prefix while records hashed under this one still verify.
_RECORD_V1: Final = b"intygstjanst-audit-record-v1\n"
_CHECKPOINT_V1: Final = b"intygstjanst-audit-checkpoint-v1\n"
# An operator's export is signed with the same key (README.md, "Hand-over before erasure"), under a prefix
# of its own: no manifest's signature is a checkpoint's, nor the other way round.
EXPORT_V1: Final = b"intygstjanst-export-manifest-v1\n"


def _tagged(value: object) -> object:
    """JSON has no times or bytes: each becomes a one-key object, which no stored string can be."""
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"an audit record cannot hold a {type(value).__name__}")


def _encoded(present: Mapping[str, object]) -> bytes:
    return json.dumps(
        present, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_tagged
    ).encode("ascii")


def canonical(values: Mapping[str, object]) -> bytes:
    """One byte string per set of values, whatever the order of the mapping.

    Sorted keys, no whitespace, times in ISO 8601, bytes in base64. A ``None`` is left out: a column
    added later (nullable, so ``None`` in older rows) then leaves the hashes of older records intact,
    and "no value" reads the same whether the column is empty or absent.
    """
    return _encoded({key: value for key, value in values.items() if value is not None})


def record_hash(prev_hash: str, values: Mapping[str, object]) -> str:
    """The hash of a record: its predecessor's hash and its stored values (not seq/prev_hash/hash), in
    the words records were first written in (``first_written``)."""
    content = first_written({key: value for key, value in values.items() if key not in CHAIN_COLUMNS})
    digest = hashlib.sha256(_RECORD_V1)
    digest.update(prev_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(_encoded(content))
    return digest.hexdigest()


# What a record's action has beside it, each in a column of its own (model.AuditRecord, migration 0006).
# Records were first written, and hashed, with all of it in two strings: ``action`` ("send:FKASSA",
# "status:RECEIV:FKASSA", "call:GetCertificate:2") and ``detail`` (the refusal's error, the registered
# type, "already exists", "deleted 3", "kept_for_citizen"). Every record is still hashed in those words, so
# that records sealed before the columns keep their hashes, and migrating either way changes no hash.
TYPED_COLUMNS: Final = ("recipient", "status", "certificate_type", "deleted", "called", "reason")
_REFUSED: Final = frozenset({"denied", "error"})
_PART: Final = re.compile(r"[A-Z]+")


def first_written(values: Mapping[str, object]) -> dict[str, object]:
    """``values`` without ``None``s, the typed columns folded into ``action`` and ``detail`` as records were
    first written. A typed value the old words cannot hold, which no record the service writes has, is
    left as a column of its own: it is hashed all the same, and the fold stays one to one."""
    present = {key: value for key, value in values.items() if value is not None}
    if "detail" in present:  # a record as stored before the typed columns (below revision 0006)
        return present
    typed: dict[str, object] = {key: present.pop(key) for key in TYPED_COLUMNS if key in present}
    action, outcome = present.get("action"), present.get("outcome")

    def take(key: str, fits: Callable[[object], bool] = lambda value: isinstance(value, str)) -> object:
        return typed.pop(key) if key in typed and fits(typed[key]) else None

    def part(value: object) -> bool:
        return isinstance(value, str) and _PART.fullmatch(value) is not None

    if action == "send" and (recipient := take("recipient", part)):
        present["action"] = f"send:{recipient}"
    elif action == "set_status" and part(typed.get("status")) and (recipient := take("recipient", part)):
        present["action"] = f"status:{take('status')}:{recipient}"
    elif action == "call" and (called := take("called")):
        present["action"] = f"call:{called}"
    detail: object = ""
    if outcome in _REFUSED:
        detail = take("reason") or ""
    elif action == "register":
        detail = (take("certificate_type") or "") if outcome == "ok" else "already exists"
    elif action == "remove_care_copy" and outcome == "ok":
        detail = "deleted" if take("deleted", lambda value: value == 1) else "kept_for_citizen"
    elif action in ("give_consent", "withdraw_consent"):
        deleted = take("deleted", lambda value: isinstance(value, int) and value > 0)
        detail = f"deleted {deleted}" if deleted else ""
    return {**present, "detail": detail, **typed}


@dataclass(frozen=True, slots=True)
class Link:
    """A record's place in the chain: the record ``id`` gets ``seq``, follows ``prev_hash``, hashes to ``hash``."""

    id: int
    seq: int
    prev_hash: str
    hash: str


def link(seq: int, last: str, rows: Iterable[Mapping[Any, Any]]) -> Iterator[Link]:
    """Chain ``rows`` in the order given after the record at ``seq`` whose hash is ``last``."""
    for row in rows:
        seq += 1
        digest = record_hash(last, row)
        yield Link(row["id"], seq, last, digest)
        last = digest


# What an unsealed record must hold to be one the service wrote: the store's NOT NULL columns.
_REQUIRED: Final = tuple(column.name for column in audit_records.c if not column.nullable)


def unsealed_problem(row: Mapping[str, Any]) -> str | None:
    """Why an unsealed record is not well-formed, or None. It is not chained yet, so nothing proves its
    content; but a record half sealed (a place or a hash without the rest) or lacking what every
    record holds was not written by the service."""
    placed = [column for column in ("seq", "prev_hash", "hash") if row.get(column) is not None]
    if placed:
        return f"has {', '.join(placed)} but no place in the chain"
    missing = [column for column in _REQUIRED if row.get(column) is None]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(row["at"], dt.datetime) or row["at"].tzinfo is not None:
        return "its time is not a wall-clock time"
    return None


def key_id(key: Ed25519PublicKey) -> str:
    """A short name of a public key, stored with each checkpoint: keys can be rotated and an auditor
    picks the right one of several. Base64, not hex: it is logged, and a run of twelve digits in hex
    would look like a personal identity number to the log store's scanners (and ``tests/zz_suite``)."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(hashlib.sha256(raw).digest()[:12]).decode("ascii")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain's hash at ``seq``, signed at ``at`` by the key named ``key_id``."""

    seq: int
    hash: str
    at: dt.datetime
    key_id: str
    signature: str  # hex

    def as_logged(self) -> dict[str, object]:
        """The checkpoint as the log event carries it: hash and signature in base64, as in ``key_id``
        (a hex run of twelve digits would look like a personal identity number in the log)."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "key_id": self.key_id,
            "hash_b64": base64.b64encode(bytes.fromhex(self.hash)).decode("ascii"),
            "signature_b64": base64.b64encode(bytes.fromhex(self.signature)).decode("ascii"),
        }

    @classmethod
    def from_logged(cls, event: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint of a log event; ``ValueError`` where the event is not one."""
        try:
            return cls(
                seq=int(event["seq"]),
                hash=base64.b64decode(str(event["hash_b64"]), validate=True).hex(),
                at=dt.datetime.fromisoformat(str(event["at"])),
                key_id=str(event["key_id"]),
                signature=base64.b64decode(str(event["signature_b64"]), validate=True).hex(),
            )
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ValueError("not a checkpoint event") from exc


def _signed_bytes(seq: int, hash_: str, at: dt.datetime) -> bytes:
    return _CHECKPOINT_V1 + canonical({"seq": seq, "hash": hash_, "at": at})


class Signer:
    """Signs checkpoints with the service's Ed25519 private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, seq: int, hash_: str, at: dt.datetime) -> Checkpoint:
        signature = self._key.sign(_signed_bytes(seq, hash_, at)).hex()
        return Checkpoint(seq=seq, hash=hash_, at=at, key_id=self.key_id, signature=signature)

    def sign_export(self, manifest: bytes) -> bytes:
        """The signature of an export's manifest, its bytes as written, under ``EXPORT_V1``."""
        return self._key.sign(EXPORT_V1 + manifest)


def export_signature_problem(
    manifest: bytes, signed_by: str, signature: bytes, keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """Why an export manifest's signature does not hold, or None where it does."""
    key = keys.get(signed_by)
    if key is None:
        return f"signed by an unknown key ({signed_by})"
    try:
        key.verify(signature, EXPORT_V1 + manifest)
    except InvalidSignature:
        return "signature invalid"
    return None


def signature_problem(checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why the checkpoint's signature does not hold, or None where it does."""
    key = keys.get(checkpoint.key_id)
    if key is None:
        return f"signed by an unknown key ({checkpoint.key_id})"
    try:
        signature = bytes.fromhex(checkpoint.signature)
        # Only the one spelling the signer wrote (lower-case hex): any changed character shows.
        if signature.hex() != checkpoint.signature:
            return "signature invalid"
        key.verify(signature, _signed_bytes(checkpoint.seq, checkpoint.hash, checkpoint.at))
    except (InvalidSignature, ValueError):
        return "signature invalid"
    return None


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Problem:
    """The first place the chain breaks: ``seq`` is that record's place, ``message`` says how (it names
    places only, never a record's content)."""

    seq: int
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """``records`` and ``checkpoints`` verified in the sealed chain; ``unsealed`` records not chained
    yet, the oldest written at ``oldest_unsealed``."""

    records: int
    checkpoints: int
    problem: Problem | None
    unsealed: int = 0
    oldest_unsealed: dt.datetime | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


class _Found(Exception):
    def __init__(self, seq: int, message: str) -> None:
        self.problem = Problem(seq, message)


class _Walk:
    """The verifier's state while it reads the records in order of seq."""

    def __init__(self, checkpoints: Iterable[Checkpoint], keys: Mapping[str, Ed25519PublicKey]) -> None:
        self.keys = keys
        self.checkpoints: Iterator[Checkpoint] = iter(checkpoints)
        self.next_checkpoint = next(self.checkpoints, None)
        self.seq = 0
        self.hash = GENESIS
        self.records = 0
        self.checked = 0
        self.sealed = 0  # the seq of the newest checkpoint that held
        self.tail = 0  # unsealed records seen
        self.oldest: dt.datetime | None = None

    def record(self, row: Mapping[Any, Any]) -> None:
        expected = self.seq + 1
        seq = row["seq"]
        if seq > expected:
            raise _Found(expected, f"record {expected}: missing (seq jumps {self.seq}->{seq})")
        if seq < expected:
            raise _Found(seq, f"record {seq}: repeated or out of order (it comes after record {self.seq})")
        if row["prev_hash"] != self.hash:
            before = f"record {self.seq}" if self.seq else "the start of the chain"
            raise _Found(seq, f"record {seq}: does not follow {before}")
        if record_hash(self.hash, row) != row["hash"]:
            raise _Found(seq, f"record {seq}: its hash does not match its content")
        self.seq, self.hash = seq, row["hash"]
        self.records += 1
        while self.next_checkpoint is not None and self.next_checkpoint.seq <= seq:
            self._checkpoint(self.next_checkpoint)
            self.next_checkpoint = next(self.checkpoints, None)

    def _checkpoint(self, checkpoint: Checkpoint) -> None:
        where = f"checkpoint at {checkpoint.seq}"
        if problem := signature_problem(checkpoint, self.keys):
            raise _Found(checkpoint.seq, f"{where}: {problem}")
        if checkpoint.seq != self.seq:
            raise _Found(checkpoint.seq, f"{where}: names no record of the chain")
        if checkpoint.hash != self.hash:
            raise _Found(
                checkpoint.seq,
                f"{where}: the chain differs from the signed hash "
                f"(records {self.sealed + 1}-{checkpoint.seq} were changed and rehashed)",
            )
        self.sealed = checkpoint.seq
        self.checked += 1

    def end(self, head: Head | None) -> None:
        """After the last record: no checkpoint and no head may name a record that is not there."""
        while self.next_checkpoint is not None:
            checkpoint = self.next_checkpoint
            if problem := signature_problem(checkpoint, self.keys):
                raise _Found(checkpoint.seq, f"checkpoint at {checkpoint.seq}: {problem}")
            if checkpoint.seq > self.seq:
                raise _Found(
                    self.seq + 1,
                    f"records after {self.seq} are missing: the checkpoint at {checkpoint.seq} names it",
                )
            self._checkpoint(checkpoint)
            self.next_checkpoint = next(self.checkpoints, None)
        if head is None:
            raise _Found(self.seq + 1, "the chain has no head")
        if head.seq > self.seq:
            raise _Found(self.seq + 1, f"records after {self.seq} are missing: the head names {head.seq}")
        if head.seq < self.seq:
            raise _Found(head.seq + 1, f"record {head.seq + 1}: beyond the head ({head.seq})")
        if head.hash != self.hash:
            raise _Found(self.seq, f"record {self.seq}: the head names another hash")

    def unsealed(self, row: Mapping[Any, Any]) -> None:
        if problem := unsealed_problem(row):
            raise _Found(self.seq + 1, f"unsealed record {row.get('id')}: {problem}")
        self.tail += 1
        if self.oldest is None or row["at"] < self.oldest:
            self.oldest = row["at"]


def verify(
    records: Iterable[Mapping[Any, Any]],
    checkpoints: Iterable[Checkpoint],
    head: Head | None,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    unsealed: Iterable[Mapping[Any, Any]] = (),
) -> Verdict:
    """Check a whole chain, read once, in order of seq: the sealed records (every stored column, by
    name), the checkpoints (in order of seq), and the head; then the unsealed tail, for form. The
    verdict names the first place it breaks."""
    walk = _Walk(checkpoints, keys)
    try:
        for row in records:
            walk.record(row)
        walk.end(head)
        for row in unsealed:
            walk.unsealed(row)
    except _Found as found:
        return Verdict(walk.records, walk.checked, found.problem, walk.tail, walk.oldest)
    return Verdict(walk.records, walk.checked, None, walk.tail, walk.oldest)
