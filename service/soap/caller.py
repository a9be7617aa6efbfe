"""Who is calling the SOAP endpoint: the system's HSA id from its client certificate (README "Callers").

A verified client certificate reaches a request in one of two ways:

- The service terminates TLS itself (``service/tls.py``). OpenSSL has verified the certificate
  during the handshake against the CA bundle (chain, validity time, key usage), and the server puts
  it in the request's ASGI TLS extension, ``scope["extensions"]["tls"]["client_cert_chain"]``.
- A TLS-terminating ingress verifies it and forwards it in a header (ingress-nginx with
  ``auth-tls-pass-certificate-to-upstream``: ``ssl-client-cert``, the URL-encoded PEM). The header is
  honoured only when the connection comes from a trusted proxy's address; from anyone else it is
  ignored. The certificate is verified again here against the same CA bundle (chain, validity time,
  clientAuth), so the ingress is trusted to pass it on, not to judge it.

Either way the certificate must name the clientAuth extended key usage, as SITHS function
certificates do: OpenSSL lets a certificate without any extended key usage through. The system's HSA
id is the subject's serialNumber (where SITHS function certificates carry it), else its CN.
Each certificate is parsed once; later requests with it cost a dictionary look-up.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service import access, errors

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Certificates remembered (a deployment has a handful of calling systems); past this the memory
# starts again rather than grow.
_REMEMBERED: Final = 1024


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# An HSA id: a country code, the organisation number, a dash and the organisation's own part, 31
# characters at most (Inera's HSA id form). Anything else from a certificate, a NUL among it, names no
# system: it would reach the audit trail's actor (README "Callers").
_HSA_ID: Final = re.compile(r"[A-Z]{2}[0-9]{10}-[0-9A-Za-z]{1,18}")


def system_hsa_id(certificate: x509.Certificate) -> str:
    """The calling system's HSA id: the subject's serialNumber (SITHS function certificates), else CN."""
    for oid in (NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME):
        for attribute in certificate.subject.get_attributes_for_oid(oid):
            value = attribute.value.strip() if isinstance(attribute.value, str) else ""
            if value:
                if not _HSA_ID.fullmatch(value):
                    raise errors.CallerNotPermitted("the client certificate names no system by an HSA id")
                return value
    raise errors.CallerNotPermitted("the client certificate names no system")


def allows_client_auth(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in usage


@dataclass(frozen=True, slots=True)
class _Verified:
    hsa_id: str
    not_before: dt.datetime
    not_after: dt.datetime


class ClientCertificates:
    """Reads the system's HSA id from client certificates, verifying them against the CA bundle
    where the TLS handshake did not (a certificate forwarded by a trusted proxy)."""

    def __init__(
        self, trust_anchors: Sequence[x509.Certificate], *, clock: Callable[[], dt.datetime] = _utc_now
    ) -> None:
        if not trust_anchors:
            raise ValueError("the client CA bundle holds no certificate")
        self._store = verification.Store(list(trust_anchors))
        self._clock = clock
        # A SITHS function certificate need not carry a subjectAltName, which the Web PKI defaults of
        # an end entity demand; everything else (key usage, clientAuth, ...) stays as those defaults.
        self._ee_policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
        )
        self._handshake_verified: dict[str, str] = {}
        self._forwarded: dict[str, _Verified] = {}

    @classmethod
    def from_file(cls, path: Path) -> ClientCertificates:
        return cls(x509.load_pem_x509_certificates(path.read_bytes()))

    def verified_in_handshake(self, pem: str) -> str:
        """The HSA id of a certificate OpenSSL verified in our own TLS handshake."""
        known = self._handshake_verified.get(pem)
        if known is None:
            certificate = _parse(pem)[0]
            if not allows_client_auth(certificate):
                raise errors.CallerNotPermitted("the client certificate is not for client authentication")
            known = system_hsa_id(certificate)
            _remember(self._handshake_verified, pem, known)
        return known

    def forwarded(self, pem: str) -> str:
        """The HSA id of a certificate (and chain) a trusted proxy forwarded, verified here against the
        CA bundle. Its validity time is checked on every request; the rest once per certificate."""
        now = self._clock()
        known = self._forwarded.get(pem)
        if known is None:
            known = self._verify(_parse(pem), now)
            _remember(self._forwarded, pem, known)
        if not known.not_before <= now <= known.not_after:
            raise errors.CallerNotPermitted("the forwarded client certificate is outside its validity")
        return known.hsa_id

    def _verify(self, chain: list[x509.Certificate], now: dt.datetime) -> _Verified:
        leaf, intermediates = chain[0], chain[1:]
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=self._ee_policy
            )
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, intermediates)
        except verification.VerificationError:
            raise errors.CallerNotPermitted("the forwarded client certificate does not verify") from None
        # The client verifier insists on clientAuth where an extended key usage is present; one
        # without any is refused here, as on the TLS handshake's path.
        if not allows_client_auth(leaf):
            raise errors.CallerNotPermitted("the client certificate is not for client authentication")
        return _Verified(
            system_hsa_id(leaf),
            max(c.not_valid_before_utc for c in verified.chain),
            min(c.not_valid_after_utc for c in verified.chain),
        )


def _parse(pem: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise errors.CallerNotPermitted("the client certificate is not a PEM certificate") from None


def _remember(memory: dict[str, Any], pem: str, value: object) -> None:
    if len(memory) >= _REMEMBERED:
        memory.clear()
    memory[pem] = value


class Callers:
    """The calling system of a request, and its entry in the permission table.

    Without a permission table (the embedded development default, loopback only) every caller is
    ``access.DEVELOPMENT_CONSUMER``.
    """

    def __init__(
        self,
        *,
        table: access.PermissionTable | None,
        certificates: ClientCertificates | None = None,
        trusted_proxies: Sequence[IPNetwork] = (),
        client_cert_header: str = "ssl-client-cert",
    ) -> None:
        if table is not None and certificates is None:
            raise ValueError("a permission table needs the client CA bundle to identify callers")
        self.table = table
        self.certificates = certificates
        self.trusted_proxies = tuple(trusted_proxies)
        self.header = client_cert_header.lower().encode("latin-1")

    def identify(self, scope: Mapping[str, Any]) -> str:
        """The HSA id of the calling system; ``CallerNotPermitted`` when it does not prove one."""
        if self.table is None:
            return access.DEVELOPMENT_CONSUMER.hsa_id
        assert self.certificates is not None
        if self.from_trusted_proxy(scope):
            forwarded = next((value for name, value in scope.get("headers", ()) if name == self.header), None)
            if not forwarded:
                raise errors.CallerNotPermitted("the trusted proxy forwarded no client certificate")
            return self.certificates.forwarded(unquote(forwarded.decode("latin-1")))
        chain = (scope.get("extensions") or {}).get("tls", {}).get("client_cert_chain") or ()
        if not chain:
            raise errors.CallerNotPermitted("the request carries no verified client certificate")
        return self.certificates.verified_in_handshake(chain[0])

    def consumer(self, hsa_id: str) -> access.Consumer:
        if self.table is None:
            return access.DEVELOPMENT_CONSUMER
        return self.table.consumer(hsa_id)

    def from_trusted_proxy(self, scope: Mapping[str, Any]) -> bool:
        """Whether the connection comes from one of ``INTYG_TRUSTED_PROXIES``."""
        client = scope.get("client")
        if not self.trusted_proxies or not client:
            return False
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(peer in network for network in self.trusted_proxies)
