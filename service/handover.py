"""The files of an operator's hand-over export (README.md, "Hand-over before erasure"): written, and verified.

``operations.export_care_giver`` reads the certificates a care giver keeps, each in a transaction with
its audit record, and gives each to a ``Writer``; ``cli`` wires the two. The export is a directory:

    certificates/000001/document.xml   the certificate as its care system registered it, byte for byte
    certificates/000001/metadata.json  what the service keeps of it: ids, type, patient, issuer, care
                                       unit and giver, times, flags, relations and status history
    ...                                one folder per certificate, numbered in the order of their ids
    manifest.json                      every file above with its SHA-256 and size, the set's SHA-256
    manifest.sig                       the Ed25519 signature of manifest.json, by the audit signing key

The set's SHA-256 (``set_sha256``) is the SHA-256 of the lines ``<sha256 in hex>  <path>\\n`` of every
file but the two manifest files, sorted by path: what ``sha256sum`` prints for them, so a receiver can
recompute it with standard tools. The signature is over the bytes ``audit_chain.EXPORT_V1`` followed by
manifest.json as written, with the key ``key_id`` names (``audit_chain.key_id``).

Folders are numbered, never named by certificate id: an id may hold any printable character, ``/`` too.
The export holds personal data in the clear (identity numbers, documents): the directory is made
readable by its owner only (0700, files 0600), and an export that does not finish is removed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service import document
from service.model import Certificate, CertificateWithDocument, HandedOver, Party, StatusCode, StatusEvent
from service.store.audit_chain import Signer, export_signature_problem

FORMAT: Final = "intygstjanst-export-v1"
MANIFEST: Final = "manifest.json"
SIGNATURE: Final = "manifest.sig"
DOCUMENT: Final = "document.xml"
METADATA: Final = "metadata.json"
_CERTIFICATES: Final = "certificates"


class Unwritable(Exception):
    """The export cannot be written where the operator said: one line, naming the path and the cause."""


class NotIntact(Exception):
    """An export that does not verify: one line naming the first file found wrong and how, never its content."""


@dataclass(frozen=True, slots=True)
class File:
    path: str  # relative to the export's directory, with "/"
    sha256: str
    size: int


def set_sha256(files: list[File]) -> str:
    lines = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def metadata(certificate: Certificate) -> dict[str, Any]:
    """What the service keeps of a certificate, beside its document."""
    unit = certificate.care_unit
    return {
        "id": certificate.id,
        "id_root": certificate.id_root,
        "type": {
            "code": certificate.type_code,
            "code_system": certificate.type_code_system,
            "display_name": certificate.type_display_name,
            "version": certificate.type_version,
        },
        "patient": certificate.patient.value,
        "issuer": {"id": certificate.issuer_id, "name": certificate.issuer_name},
        "care_unit": {"id": unit.unit_id, "name": unit.unit_name, "workplace_code": unit.workplace_code},
        "care_giver": {"id": unit.care_giver_id, "name": unit.care_giver_name},
        "signed_at": _time(certificate.signed_at),
        "registered_at": _time(certificate.registered_at),
        "valid_from": None if certificate.valid_from is None else certificate.valid_from.isoformat(),
        "valid_to": None if certificate.valid_to is None else certificate.valid_to.isoformat(),
        "care_available": certificate.care_available,
        "citizen_available": certificate.citizen_available,
        "revoked": certificate.revoked,
        "relations": [
            {"kind": r.kind.value, "certificate_id": r.certificate_id, "certificate_root": r.certificate_root}
            for r in certificate.relations
        ],
        "related_by": [
            {"kind": r.kind.value, "certificate_id": r.certificate_id, "certificate_root": r.certificate_root}
            for r in certificate.related_by
        ],
        "status_history": [
            {"code": e.code.value, "party": e.party.value, "at": e.at.isoformat()}
            for e in certificate.status_events
        ],
        "document": DOCUMENT,
    }


def _handed_over(found: Mapping[str, Any]) -> HandedOver:
    return HandedOver(
        certificate_id=str(found["id"]),
        registered_at=dt.datetime.fromisoformat(found["registered_at"]),
        status_events=tuple(
            StatusEvent(StatusCode(e["code"]), Party(e["party"]), dt.datetime.fromisoformat(e["at"]))
            for e in found["status_history"]
        ),
    )


def _encoded(value: Mapping[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _failed(action: str, path: Path, exc: OSError) -> Unwritable:
    return Unwritable(f"cannot {action} {path}: {exc.strerror or type(exc).__name__}")


class Writer:
    """Writes one export into ``out``: a new directory, or an empty one, made the owner's only (0700). Call
    it with each certificate, then ``finish``; ``discard`` removes what it wrote, so that an export that
    does not finish leaves no personal data behind and no manifest (it never verifies)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._created = False
        self._files: list[File] = []
        self._folders: list[Path] = []
        self.count = 0
        try:
            out.mkdir(mode=0o700)
            self._created = True
        except FileExistsError:
            if not out.is_dir() or any(out.iterdir()):
                raise Unwritable(f"{out} exists and is not an empty directory") from None
        except OSError as exc:
            raise _failed("create", out, exc) from None
        try:
            out.chmod(0o700)
            self._folder(out / _CERTIFICATES)
        except OSError as exc:
            raise _failed("create", out, exc) from None

    def _folder(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        self._folders.append(path)

    def _write(self, relative: str, data: bytes) -> File:
        path = self.out / relative
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            raise _failed("write", path, exc) from None
        return File(relative, hashlib.sha256(data).hexdigest(), len(data))

    def __call__(self, found: CertificateWithDocument) -> None:
        self.count += 1
        folder = f"{_CERTIFICATES}/{self.count:06d}"
        try:
            self._folder(self.out / folder)
        except OSError as exc:
            raise _failed("create", self.out / folder, exc) from None
        # The bytes its care system registered, without the frame the store seals them in (document.py).
        self._files.append(self._write(f"{folder}/{DOCUMENT}", document.content(found.document)))
        self._files.append(self._write(f"{folder}/{METADATA}", _encoded(metadata(found.certificate))))

    def finish(
        self, *, care_giver_id: str, started_at: dt.datetime, finished_at: dt.datetime, signer: Signer
    ) -> str:
        """Write the manifest and its signature; returns the set's SHA-256. The manifest comes last, whole
        (written aside and renamed), so that an export cut off before it never verifies."""
        manifest = _encoded(
            {
                "format": FORMAT,
                "care_giver_id": care_giver_id,
                "started_at": started_at.isoformat(),
                "finished_at": finished_at.isoformat(),
                "certificates": self.count,
                "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self._files],
                "set_sha256": set_sha256(self._files),
                "key_id": signer.key_id,
            }
        )
        signature = {
            "key_id": signer.key_id,
            "signature_b64": base64.b64encode(signer.sign_export(manifest)).decode("ascii"),
        }
        self._write(SIGNATURE, _encoded(signature))
        self._write(f".{MANIFEST}.partial", manifest)
        try:
            os.replace(self.out / f".{MANIFEST}.partial", self.out / MANIFEST)
            directory = os.open(self.out, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            raise _failed("write", self.out / MANIFEST, exc) from None
        return set_sha256(self._files)

    def discard(self) -> None:
        """Remove what this writer wrote (best effort: what cannot be removed is left for the operator)."""
        names = [*(f.path for f in self._files), SIGNATURE, f".{MANIFEST}.partial", MANIFEST]
        for name in names:
            with contextlib.suppress(OSError):
                (self.out / name).unlink()
        for folder in reversed(self._folders):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if self._created:
            with contextlib.suppress(OSError):
                self.out.rmdir()


@dataclass(frozen=True, slots=True)
class Export:
    """A verified export: whose, when, by which key, and the certificates it holds, by id."""

    care_giver_id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    key_id: str
    set_sha256: str
    certificates: dict[str, HandedOver]


def _present(directory: Path) -> dict[str, Path]:
    """Every entry under ``directory`` by its path relative to it; a symbolic link or anything else that
    is no regular file or directory is refused (a hash of a link's target would prove nothing)."""
    found: dict[str, Path] = {}
    for root, folders, files in os.walk(directory):
        for name in [*folders, *files]:
            path = Path(root) / name
            relative = path.relative_to(directory).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise NotIntact(f"{relative}: not a regular file")
            found[relative] = path
    return found


def _manifest(directory: Path, keys: Mapping[str, Ed25519PublicKey]) -> tuple[dict[str, Any], str]:
    try:
        manifest = (directory / MANIFEST).read_bytes()
        signature = json.loads((directory / SIGNATURE).read_bytes())
    except FileNotFoundError as exc:
        raise NotIntact(
            f"{Path(str(exc.filename)).name}: missing (an export that did not finish has none)"
        ) from None
    except (OSError, ValueError) as exc:
        raise NotIntact(f"{SIGNATURE}: unreadable ({type(exc).__name__})") from None
    try:
        signed_by = str(signature["key_id"])
        signed = base64.b64decode(str(signature["signature_b64"]), validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise NotIntact(f"{SIGNATURE}: not a signature") from None
    if problem := export_signature_problem(manifest, signed_by, signed, keys):
        raise NotIntact(f"{MANIFEST}: {problem}")
    try:
        content = json.loads(manifest)
        if content["format"] != FORMAT or content["key_id"] != signed_by:
            raise ValueError(content["format"])
    except (ValueError, KeyError, TypeError):
        raise NotIntact(f"{MANIFEST}: not a manifest of {FORMAT}") from None
    return content, signed_by


def verify(directory: Path, keys: Mapping[str, Ed25519PublicKey]) -> Export:
    """The export in ``directory``, if its manifest's signature holds with one of ``keys`` and every file
    is there as the manifest lists it, and nothing else; else ``NotIntact`` naming the first problem."""
    try:
        return _verified(directory, keys)
    except OSError as exc:
        raise NotIntact(f"{exc.filename}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def _verified(directory: Path, keys: Mapping[str, Ed25519PublicKey]) -> Export:
    if not directory.is_dir():
        raise NotIntact(f"{directory}: no such directory")
    content, signed_by = _manifest(directory, keys)
    listed = [File(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in content["files"]]
    if set_sha256(listed) != content["set_sha256"]:
        raise NotIntact(f"{MANIFEST}: the set's SHA-256 does not match its files")
    present = _present(directory)
    for extra in sorted(set(present) - {f.path for f in listed} - {MANIFEST, SIGNATURE}):
        raise NotIntact(f"{extra}: not in the manifest")
    certificates: dict[str, HandedOver] = {}
    for file in listed:
        path = present.get(file.path)
        if path is None:
            raise NotIntact(f"{file.path}: missing")
        data = path.read_bytes()
        if len(data) != file.size or hashlib.sha256(data).hexdigest() != file.sha256:
            raise NotIntact(f"{file.path}: its SHA-256 does not match the manifest")
        if file.path.endswith(f"/{METADATA}"):
            handed = _handed_over(json.loads(data))
            certificates[handed.certificate_id] = handed
    if len(certificates) != content["certificates"]:
        raise NotIntact(
            f"{MANIFEST}: lists {content['certificates']} certificates, holds {len(certificates)}"
        )
    return Export(
        care_giver_id=str(content["care_giver_id"]),
        started_at=dt.datetime.fromisoformat(content["started_at"]),
        finished_at=dt.datetime.fromisoformat(content["finished_at"]),
        key_id=signed_by,
        set_sha256=str(content["set_sha256"]),
        certificates=certificates,
    )
