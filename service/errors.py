"""The one error hierarchy of the service.

Every refusal or failure an operation can report is one of these classes. Each adapter maps the
tree in one table (``soap/faults.py``, ``rest/errors.py``) and ``tests/unit/test_error_maps.py``
keeps those tables complete.

    ServiceError
    ├── InvalidInput                 the request is malformed or names impossible values
    │   ├── InvalidPersonId          not a valid personnummer / samordningsnummer
    │   ├── InvalidStatusChange      this party may not set this status (SetCertificateStatus)
    │   ├── PatientMismatch          the request names another patient than the certificate has
    │   ├── UnknownRecipient         no such recipient, or it does not take this type of certificate
    │   ├── UnknownCertificateType   a type, or a version of it, the service does not store (detail: which)
    │   └── BusinessRuleViolation    the certificate breaks its type's business rules (detail: which, where)
    ├── CertificateNotFound          no such certificate, or not visible to this caller
    ├── Conflict
    │   ├── CertificateIdConflict    rule 1: the id is taken by another patient's certificate
    │   └── CertificateRevoked       the certificate is revoked; the action needs a valid one
    ├── Denied                       a refusal that is audited with outcome "denied"
    │   ├── ConsentRequired          rule 2: the citizen has not given consent
    │   ├── NotPermitted             the caller may not act on this certificate
    │   ├── CertificateIdTaken       rule 1: the id is held by another care giver's certificate
    │   ├── CallerNotPermitted       the calling system is unidentified, or its permissions do not cover the call
    │   └── Unauthenticated          the citizen did not prove who it is (no or bad token)
    ├── ConcurrentChange             a concurrent transaction won; the operation may be retried
    ├── StoreUnavailable             the database did not answer in time: frozen, unreachable, or a lock held too long
    ├── StoredDataUnreadable         a stored ciphertext fails its check: altered, or moved from another row
    │   └── KekMissing               its data key is wrapped under a key-encryption key not configured
    └── UnexpectedError              never raised: an audit record's reason for a fault no class here describes

Messages are safe to show to a caller: they never hold a personal identity number or document text.
A caller is answered from the adapters' tables, not the message; only a ``detail``, where the refusing
rule gives one, is told to the caller as well (the SOAP result's text, problem+json's ``detail``): which
type or version is unknown, which of its type's rules the caller's own certificate breaks and where, in
the words of those rules (identity numbers masked).

``ANSWERED_AS`` names the refusals answered exactly as another error, so that a caller cannot probe for
ids. Everything a caller's answer could be compared with (the adapters' answers, the metrics, the
request log) takes the error it is answered as; only the audit trail records the refusal itself.
"""

from typing import Final


class ServiceError(Exception):
    """Base of every error an operation raises on purpose.

    ``detail`` says which of the request's values is refused, where knowing it lets the caller put the
    request right (which type, which version): words of the refusing rule and values it has bounded.
    Adapters tell it through ``told``.
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class InvalidInput(ServiceError):
    pass


class InvalidPersonId(InvalidInput):
    pass


class InvalidStatusChange(InvalidInput):
    pass


class PatientMismatch(InvalidInput):
    pass


class UnknownRecipient(InvalidInput):
    pass


class UnknownCertificateType(InvalidInput):
    pass


class BusinessRuleViolation(InvalidInput):
    pass


class CertificateNotFound(ServiceError):
    pass


class Conflict(ServiceError):
    pass


class CertificateIdConflict(Conflict):
    pass


class CertificateRevoked(Conflict):
    pass


class Denied(ServiceError):
    pass


class ConsentRequired(Denied):
    pass


class NotPermitted(Denied):
    pass


class CertificateIdTaken(Denied):
    pass


class CallerNotPermitted(Denied):
    pass


class Unauthenticated(Denied):
    pass


class ConcurrentChange(ServiceError):
    pass


class StoreUnavailable(ServiceError):
    """Raised by the store (``store/unit_of_work.py``, ``store/deadline.py``): nothing was done, or the
    commit's fate is unknown (the effect and its audit record share it). Retrying later may succeed."""


class StoredDataUnreadable(ServiceError):
    """Raised by the store (encryption at rest, ``store/crypto.py``): a fault of the store, not of the
    request, answered as an internal error that shows nothing of any row."""


class KekMissing(StoredDataUnreadable):
    pass


class UnexpectedError(ServiceError):
    """Not raised. The reason an audit record gives (``operations``) where an operation ended in a fault
    that is no ``ServiceError``, a defect: that fault's own kind is not recorded, since a reason is also
    a metric's label, whose values are a closed set. Answered as any internal error."""


def named(name: str) -> type[ServiceError] | None:
    """The class of this tree named ``name`` (as an audit record stores its reason), or None."""
    return _BY_NAME.get(name)


def _tree(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [cls, *(found for sub in cls.__subclasses__() for found in _tree(sub))]


_BY_NAME: Final = {cls.__name__: cls for cls in _tree(ServiceError)}


# Another care giver's or another citizen's certificate is answered, counted and logged as an unknown id
# (README "Callers": not even the metrics tell them apart). The audit record keeps "denied", NotPermitted.
ANSWERED_AS: Final[dict[type[ServiceError], type[ServiceError]]] = {NotPermitted: CertificateNotFound}


def answered_as(error: type[ServiceError]) -> type[ServiceError]:
    """The error whose answer (and count, and log line) ``error`` is given: its own, or ``ANSWERED_AS``'s."""
    return ANSWERED_AS.get(error, error)


def told(error: ServiceError) -> str | None:
    """The ``detail`` a caller is told of ``error``: none where it is answered as another error, whose
    answer it is given whole."""
    return error.detail if answered_as(type(error)) is type(error) else None
