"""Throwaway certificates for the mutual-TLS tests, made with ``cryptography``: a CA standing in for
SITHS, a server certificate for loopback, and client certificates of every kind the service must tell
apart (valid, expired, another CA's, the wrong extended key usage, none, a system the permission table
does not name). Keys are P-256: quick to make, and the service does not care which kind.

A client certificate carries the system's HSA id in the subject's serialNumber, as SITHS function
certificates do. Used by ``tests/integration/test_mutual_tls.py`` (a real server and real
handshakes) and ``tests/integration/test_callers.py`` (in process, with a fake of the TLS layer).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)

WEBCERT = "SE5565594230-B8N"  # a care system allowed care giver A
JOURNAL = "SE2321000016-JRNL"  # a care system allowed care giver B
PORTAL = "SE2321000016-PORT"  # the citizen portal: citizen operations, every care giver
FORSAKRINGSKASSAN = "SE2021005521-FKSS"  # a recipient's system: Försäkringskassan (part FKASSA)
UNKNOWN = "SE0000000000-NONE"  # a valid certificate of a system the table does not name
GIVER_A = "SE2321000016-39KJ"
GIVER_B = "SE2321000016-GVRB"


def _usage(*, digital_signature: bool = True, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=not key_cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def forwarded(self) -> str:
        """As ingress-nginx forwards it (``$ssl_client_escaped_cert``): the PEM, URL-encoded."""
        return quote(self.pem, safe="")

    def write(self, folder: Path, name: str) -> tuple[Path, Path]:
        """The certificate and its key as PEM files: ``<name>.pem`` and ``<name>.key``."""
        certificate, key = folder / f"{name}.pem", folder / f"{name}.key"
        certificate.write_text(self.pem, encoding="ascii")
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key.chmod(0o600)
        return certificate, key


class Authority:
    """A throwaway certificate authority."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY)
            .not_valid_after(NOW + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(key_cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def _issue(
        self,
        subject: x509.Name,
        *,
        extended_usage: Sequence[x509.ObjectIdentifier] | None,
        not_before: dt.datetime,
        not_after: dt.datetime,
        alt_names: Sequence[x509.GeneralName] = (),
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if extended_usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_usage)), critical=False)
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)

    def server(self) -> Issued:
        """A server certificate for 127.0.0.1 and localhost."""
        return self._issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
            extended_usage=[ExtendedKeyUsageOID.SERVER_AUTH],
            not_before=NOW - DAY,
            not_after=NOW + 30 * DAY,
            alt_names=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )

    def client(
        self,
        hsa_id: str,
        *,
        extended_usage: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 30 * DAY,
        utf8: bool = False,
    ) -> Issued:
        """A SITHS-style function certificate: the HSA id in serialNumber (a PrintableString, or with
        ``utf8`` a UTF8String, which may hold any character), a name in CN."""
        kind = _ASN1Type.UTF8String if utf8 else _ASN1Type.PrintableString
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, hsa_id, _type=kind),
                x509.NameAttribute(NameOID.COMMON_NAME, f"system {hsa_id}"),
            ]
        )
        return self._issue(subject, extended_usage=extended_usage, not_before=not_before, not_after=not_after)


@dataclass(frozen=True)
class Pki:
    """The files a mutual-TLS service is configured with, and the clients that call it."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    permissions_file: Path
    clients: dict[str, Issued]
    folder: Path

    def client_files(self, name: str) -> tuple[Path, Path]:
        return self.clients[name].write(self.folder, f"client-{name}")


PERMISSIONS: dict[str, Any] = {
    "consumers": [
        {
            "hsa_id": WEBCERT,
            "name": "Webcert",
            "operations": [
                "RegisterCertificate",
                "GetCertificate:2",
                "ListCertificatesForCare",
                "RevokeCertificate",
                "RemoveCertificateForCare",
                "GetCertificateForCare",
            ],
            "care_givers": [GIVER_A],
            "logical_addresses": ["*"],
        },
        {
            "hsa_id": JOURNAL,
            "name": "A journal system of care giver B",
            "operations": [
                "RegisterCertificate",
                "GetCertificate:2",
                "ListCertificatesForCare",
                "SetCertificateStatus:2",
                "RevokeCertificate",
                "RemoveCertificateForCare",
                "GetCertificateForCare",
                "SendCertificateToRecipient",
            ],
            "care_givers": [GIVER_B],
            "logical_addresses": [GIVER_B],
        },
        {
            "hsa_id": FORSAKRINGSKASSAN,
            "name": "Försäkringskassan",
            "operations": ["GetCertificate:2", "SetCertificateStatus:2"],
            "care_givers": ["*"],
            "logical_addresses": ["*"],
            "recipient": "FKASSA",
        },
        {
            "hsa_id": PORTAL,
            "name": "The citizen portal",
            "operations": ["SetConsent", "GetConsent", "ListCertificatesForCitizen", "GetCertificate"],
            "care_givers": ["*"],
            "logical_addresses": ["*"],
        },
    ]
}


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate and every kind of client certificate, written to ``folder``."""
    authority, stranger = Authority("Test SITHS CA"), Authority("Another CA")
    ca_file = folder / "client-ca.pem"
    ca_file.write_text(authority.pem, encoding="ascii")
    server_cert, server_key = authority.server().write(folder, "server")
    permissions_file = folder / "permissions.json"
    permissions_file.write_text(json.dumps(PERMISSIONS), encoding="utf-8")
    clients = {
        "webcert": authority.client(WEBCERT),
        "journal": authority.client(JOURNAL),
        "portal": authority.client(PORTAL),
        "fkassa": authority.client(FORSAKRINGSKASSAN),
        "unknown": authority.client(UNKNOWN),
        "expired": authority.client(WEBCERT, not_before=NOW - 30 * DAY, not_after=NOW - DAY),
        "other_ca": stranger.client(WEBCERT),
        "server_auth": authority.client(WEBCERT, extended_usage=[ExtendedKeyUsageOID.SERVER_AUTH]),
        "no_eku": authority.client(WEBCERT, extended_usage=None),
        "nul_in_hsa_id": authority.client(WEBCERT + "\x00", utf8=True),
    }
    return Pki(ca_file, server_cert, server_key, permissions_file, clients, folder)
