"""How fast ``intygstjanst verify-audit`` checks a long audit chain: a measurement, not a test (README
"Audit log").

    .venv/bin/python -m tests.audit_benchmark [--records 100000] [--every 1000]

Builds a SQLite database in a temporary directory (the migrated schema, then chained records and
signed checkpoints inserted in bulk, as ``SqlAuditLog`` would have written them one by one), verifies
it through the command's own code path, and prints records per second. The chain of real operations
and the tampering trials are in ``tests/integration/test_audit_log.py``, which also runs this at
100,000 records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.store import audit_chain, audit_verification, migration
from service.store.tables import audit_checkpoints, audit_head, audit_records

START = dt.datetime(2024, 5, 17, 8, 0)
_BATCH = 10_000


def _contents(count: int) -> Iterator[dict[str, Any]]:
    """Records like the service writes: care reads and lists, citizens' reads, refusals."""
    actions = ("read", "list", "register", "give_consent", "send")
    for index in range(count):
        action = actions[index % len(actions)]
        # What the store keeps of a patient: the keyed hash of the number (store/crypto.py), 43 characters.
        patient = f"{index % 100_000:x>43}"
        citizen = index % 3 == 0
        yield {
            "at": START + dt.timedelta(milliseconds=137 * index),
            "action": action,
            "outcome": "denied" if index % 17 == 0 else "ok",
            "actor_kind": "citizen" if citizen else "care_system",
            "actor_id": "1177-portal" if citizen else "SE2321000016-WEBCERT",
            "actor_person_id": patient if citizen else None,
            "channel": "rest" if citizen else "soap",
            "patient_key": patient,
            "certificate_ids": f"bench-{index},bench-{index + 1}",
            "care_unit_id": None if citizen else f"SE2321000016-UNIT{index % 40}",
            "care_giver_id": None if citizen else "SE2321000016-GIVER1",
            "care_unit_name": None if citizen else f"Vårdcentralen {index % 40}",
            "care_giver_name": None if citizen else "Region Exempel",
            "recipient": "FKASSA" if action == "send" else None,
            "reason": "NotPermitted" if index % 17 == 0 else None,
        }


def build(path: Path, records: int, signer: audit_chain.Signer, *, every: int = 1000) -> str:
    """A migrated SQLite database at ``path`` holding a chain of ``records``; returns its URL."""
    url = f"sqlite+aiosqlite:///{path}"
    migration.upgrade(url)
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    last = audit_chain.GENESIS
    seq = 0
    try:
        with engine.begin() as connection:
            batch: list[dict[str, Any]] = []
            checkpoints = []
            for content in _contents(records):
                seq += 1
                digest = audit_chain.record_hash(last, content)
                batch.append({**content, "seq": seq, "prev_hash": last, "hash": digest})
                if seq % every == 0:
                    checkpoints.append(signer.sign(seq, digest, content["at"]))
                last = digest
                if len(batch) == _BATCH:
                    connection.execute(sqlalchemy.insert(audit_records), batch)
                    batch = []
            if batch:
                connection.execute(sqlalchemy.insert(audit_records), batch)
            if checkpoints:
                connection.execute(
                    sqlalchemy.insert(audit_checkpoints),
                    [
                        {
                            "seq": c.seq,
                            "hash": c.hash,
                            "at": c.at,
                            "key_id": c.key_id,
                            "signature": c.signature,
                        }
                        for c in checkpoints
                    ],
                )
            connection.execute(sqlalchemy.update(audit_head).values(seq=seq, hash=last))
    finally:
        engine.dispose()
    return url


def public_pem(signer: audit_chain.Signer) -> bytes:
    return signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=1000)
    args = parser.parse_args()
    signer = audit_chain.Signer(Ed25519PrivateKey.generate())
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        url = build(Path(workdir) / "audit.db", args.records, signer, every=args.every)
        built = time.perf_counter() - started
        started = time.perf_counter()
        verdict = audit_verification.verify_database(url, {signer.key_id: signer.public_key})
        elapsed = time.perf_counter() - started
    print(f"built {args.records} chained records in {built:.1f} s")
    print(
        f"verified {verdict.records} records and {verdict.checkpoints} checkpoints in {elapsed:.2f} s: "
        f"{verdict.records / elapsed:,.0f} records/s ({'intact' if verdict.intact else verdict.problem})"
    )


if __name__ == "__main__":
    main()
