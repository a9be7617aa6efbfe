"""The files and keys the settings name, read once into the objects they describe.

``load(settings)`` reads every one the service needs into ``Loaded``, and ``create_app`` is built from
that: the keys of encryption at rest (``store/crypto.py``), the permission table of SOAP callers
(``access.py``) and the client CA bundle, the recipients, the audit log's signing key
(``store/audit_key.py``), the portal's keys (``rest/auth.py``) and the certificate types' business
rules (``business_rules.py``, compiled once per process). ``serve`` loads before it starts,
so that a missing or malformed file stops the start with one line; the CLI's other commands load
only what they need.

Each loader raises ``Unusable``, a ValueError naming the setting and the reason, never key material.
The shapes of the files are checked in ``config.py``, what they mean here and in the modules of the
objects they become.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc.jwk import KeySet

from service import access, business_rules, certificate_type, tls
from service.access import Consumer, PermissionTable
from service.business_rules import RuleSet
from service.config import (
    DEFAULT_RECIPIENTS,
    ConsumerEntry,
    KeysFile,
    PermissionsFile,
    RecipientsFile,
    Settings,
)
from service.model import Recipient
from service.rest.auth import portal_keys
from service.soap.caller import ClientCertificates
from service.soap.contracts import CONTRACTS
from service.store import audit_key, crypto
from service.store.audit_chain import Signer
from service.store.crypto import KeyRing

# What each loader names when it fails: the first words of its one line.
KEYS = "the keys of encryption at rest cannot be used"
CALLERS = "the TLS or permission settings cannot be used"
RECIPIENTS = "the recipients file (INTYG_RECIPIENTS_FILE) cannot be used"
SIGNING_KEY = "the audit log's signing key"
VERIFY_KEYS = "the audit log's verify keys cannot be used"
PORTAL_KEYS = "the portal's keys cannot be used"
BUSINESS_RULES = "the business rules (INTYG_BUSINESS_RULES_DIR) cannot be used"


class Unusable(ValueError):
    """A setting whose file or value cannot be used: what it is, and why, in one line."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        reason = f"cannot read {exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        raise Unusable(what, reason) from None
    except (ValueError, TypeError) as exc:  # the loaders' messages quote no key material
        raise Unusable(what, " ".join(str(exc).split())) from None


@dataclass(frozen=True, slots=True)
class Loaded:
    """Everything ``create_app`` needs that the settings only name."""

    keyring: KeyRing
    permissions: PermissionTable | None
    client_certificates: ClientCertificates | None
    recipients: dict[str, Recipient]
    signer: Signer
    portal_keys: KeySet = field(repr=False)
    # None: none configured (the development profile), certificates are checked for type and version only.
    business_rules: RuleSet | None = None


def load(settings: Settings) -> Loaded:
    """Reads every file the service needs, once."""
    return Loaded(
        keyring=keyring(settings),
        permissions=permissions(settings),
        client_certificates=client_certificates(settings),
        recipients=recipients(settings),
        signer=audit_signer(settings),
        portal_keys=portal(settings),
        business_rules=rule_set(settings),
    )


def portal(settings: Settings) -> KeySet:
    """The keys citizens' tokens are checked with: the portal's, or else the development key."""
    with _reading(PORTAL_KEYS):
        return portal_keys(settings)


def rule_set(settings: Settings) -> RuleSet | None:
    """The certificate types' business rules, compiled (once per process), or None where none are set."""
    if settings.business_rules_dir is None:
        return None
    with _reading(BUSINESS_RULES):
        return business_rules.compiled(settings.business_rules_dir)


def keyring(settings: Settings) -> KeyRing:
    """The keys of encryption at rest: configured, or the generated development keys; refused where
    they are unusable, or absent and not to be made."""
    with _reading(KEYS):
        if settings.keys_file is not None:
            return _keys_file(settings.keys_file)
        if settings.kek is not None and settings.lookup_key is not None:
            return crypto.keyring_from_variables(
                settings.kek.get_secret_value(), settings.lookup_key.get_secret_value()
            )
        if not settings.may_generate_keys:
            raise ValueError(
                "no keys are configured (INTYG_KEYS_FILE, or INTYG_KEK with INTYG_LOOKUP_KEY), and "
                "development keys serve only the embedded SQLite database of the development profile"
            )
        return _development_keys(settings.dev_keys_file)


def migration_keyring(settings: Settings) -> KeyRing | None:
    """The keys migrations converting stored rows are given (``intygstjanst migrate``, the bare ``alembic``
    command): the configured or development keys, or none where there are none to be had (a migration
    that finds rows to convert then says so)."""
    if settings.keys_configured or settings.may_generate_keys:
        return keyring(settings)
    return None


def _keys_file(path: Path) -> KeyRing:
    entry = KeysFile.parse(path.read_bytes(), str(path))
    return crypto.keyring_from_base64(entry.kek.current, entry.kek.keys, entry.lookup_key, where=str(path))


def _development_keys(path: Path) -> KeyRing:
    """The development profile's keys, generated on first use. Linked into place, never replaced: of
    workers starting at once, each gets the one file the first wrote (a second set of keys would make
    the first worker's certificates unreadable). Mode 0600 from ``mkstemp``."""
    if not path.exists():
        text = crypto.keys_file_text(KeyRing.generate())
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return _keys_file(path)


def _all_or_listed(values: list[str]) -> frozenset[str] | None:
    return None if values == ["*"] else frozenset(values)


def _consumer(entry: ConsumerEntry) -> Consumer:
    return Consumer(
        hsa_id=entry.hsa_id,
        name=entry.name,
        operations=_all_or_listed(entry.operations),
        care_givers=_all_or_listed(entry.care_givers),
        logical_addresses=_all_or_listed(entry.logical_addresses),
        recipient=entry.recipient,
    )


def permissions(settings: Settings) -> PermissionTable | None:
    """The permission table of SOAP callers, checked against the contracts served, or None on the
    development default (no table)."""
    if settings.permissions_file is None:
        return None
    with _reading(CALLERS):
        path = settings.permissions_file
        entries = PermissionsFile.parse(path.read_bytes(), str(path)).consumers
        return access.permission_table((_consumer(e) for e in entries), tuple(CONTRACTS))


def client_certificates(settings: Settings) -> ClientCertificates | None:
    """The client CA bundle callers' certificates must chain to, or None on the development default."""
    if settings.tls_client_ca_file is None:
        return None
    with _reading(CALLERS):
        return ClientCertificates.from_file(settings.tls_client_ca_file)


def tls_server_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context where the service terminates TLS: ``serve`` makes one to check the
    files before its workers each make their own."""
    if not (settings.tls_cert_file and settings.tls_key_file and settings.tls_client_ca_file):
        return None
    with _reading(CALLERS):
        return tls.server_context(
            cert_file=settings.tls_cert_file,
            key_file=settings.tls_key_file,
            client_ca_file=settings.tls_client_ca_file,
        )


def recipients(settings: Settings) -> dict[str, Recipient]:
    """The recipient registry, by id: the configured file's, or the national recipients. A file that
    gives a recipient a type the type table does not know, or does not send to it, is refused: a send
    needs both to agree (``rules.takes``), and an entry that cannot is an operator's mistake."""
    if settings.recipients_file is None:
        return {r.party.value: r for r in DEFAULT_RECIPIENTS}
    with _reading(RECIPIENTS):
        path = settings.recipients_file
        entries = RecipientsFile.parse(path.read_bytes(), str(path))
        for entry in entries:
            certificate_type.require_sent_to(entry.id, entry.certificate_types)
    return {e.id.value: Recipient(e.id, e.name, frozenset(e.certificate_types)) for e in entries}


def audit_signer(settings: Settings) -> Signer:
    """What the service signs the audit log's checkpoints with."""
    with _reading(SIGNING_KEY):
        return audit_key.signer(settings.audit_signing_key_file, development_file=settings.dev_audit_key_file)


def audit_verify_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """The public keys ``verify-audit`` checks checkpoints with; production never trusts the
    development key."""
    with _reading(VERIFY_KEYS):
        return audit_key.verify_keys(
            verify_keys_file=settings.audit_verify_keys_file,
            signing_key_file=settings.audit_signing_key_file,
            development_file=settings.dev_audit_key_file if settings.profile == "development" else None,
        )
