"""How the SOAP channel answers each error of ``service.errors``: one table.

Contracts with a ``result`` answer with HTTP 200 and ERROR plus an errorId (rivta/README.md); contracts
without one (GetCertificate 2, ListCertificatesForCare 3, ListCertificatesForCitizen 4) answer with a
SOAP Fault. ``tests/unit/test_error_maps.py`` checks that every error class has an entry, or is answered as
another error (``errors.ANSWERED_AS``: NotPermitted as CertificateNotFound) that has.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from service import errors
from service.soap.messages import Result


@dataclass(frozen=True, slots=True)
class SoapError:
    error_id: str
    fault_code: str
    text: str

    @property
    def result(self) -> Result:
        return Result("ERROR", self.text, self.error_id)


# The answer to any internal error: a fault of the service, of nothing the caller sent.
INTERNAL: Final = SoapError("TECHNICAL_ERROR", "Server", "Internal error")

# APPLICATION_ERROR where the state may change so that the same request succeeds later (Webcert resends
# a revoke that overtook its register); VALIDATION_ERROR where the request itself is wrong.
ERRORS: Final[dict[type[errors.ServiceError], SoapError]] = {
    errors.ServiceError: SoapError("TECHNICAL_ERROR", "Server", "The request could not be carried out"),
    errors.InvalidInput: SoapError("VALIDATION_ERROR", "Client", "The request has invalid values"),
    errors.InvalidPersonId: SoapError("VALIDATION_ERROR", "Client", "Invalid personal identity number"),
    errors.InvalidStatusChange: SoapError(
        "VALIDATION_ERROR", "Client", "This part may not set this status on a certificate"
    ),
    errors.PatientMismatch: SoapError(
        "VALIDATION_ERROR", "Client", "The certificate does not belong to the patient named"
    ),
    errors.UnknownRecipient: SoapError(
        "VALIDATION_ERROR", "Client", "Unknown recipient for this certificate"
    ),
    # Its detail, the answer's text, names the type or version (rules.require_known_type).
    errors.UnknownCertificateType: SoapError(
        "VALIDATION_ERROR", "Client", "Unknown certificate type or version"
    ),
    # Its detail names which of its type's rules the certificate breaks and where (rules.py).
    errors.BusinessRuleViolation: SoapError(
        "VALIDATION_ERROR", "Client", "The certificate does not follow the rules of its type"
    ),
    errors.CertificateNotFound: SoapError("APPLICATION_ERROR", "Client", "Certificate not found"),
    errors.Conflict: SoapError("APPLICATION_ERROR", "Client", "The request conflicts with the stored state"),
    errors.CertificateIdConflict: SoapError(
        "VALIDATION_ERROR", "Client", "Certificate id already used for another patient"
    ),
    errors.CertificateRevoked: SoapError("REVOKED", "Client", "Certificate is revoked"),
    errors.Denied: SoapError("APPLICATION_ERROR", "Client", "The caller may not do this"),
    errors.ConsentRequired: SoapError(
        "APPLICATION_ERROR", "Client", "NOCONSENT: the citizen has not given consent"
    ),
    # A call the permission table does not cover (or from an unidentified system) is the caller's to fix:
    # soap:Client, and APPLICATION_ERROR where the contract has a result. The answer does not say which
    # check failed; the service's log and audit trail do.
    # One answer whichever patient the request names: nothing of the other care giver's certificate.
    errors.CertificateIdTaken: SoapError(
        "VALIDATION_ERROR", "Client", "Certificate id already used by another care giver"
    ),
    errors.CallerNotPermitted: SoapError(
        "APPLICATION_ERROR", "Client", "The calling system is not permitted to make this call"
    ),
    errors.Unauthenticated: SoapError("APPLICATION_ERROR", "Client", "The caller is not authenticated"),
    errors.ConcurrentChange: SoapError(
        "TECHNICAL_ERROR", "Server", "A concurrent change interfered; try again"
    ),
    # The database did not answer in time: soap:Server, and TECHNICAL_ERROR where the contract has a
    # result; the caller may send the same request again later (register is idempotent, rule 1).
    errors.StoreUnavailable: SoapError(
        "TECHNICAL_ERROR", "Server", "The service is temporarily unavailable; try again later"
    ),
    # Encryption at rest: the same answer as any internal error; nothing of the row is shown.
    errors.StoredDataUnreadable: INTERNAL,
    errors.KekMissing: INTERNAL,
    errors.UnexpectedError: INTERNAL,
}

# The insuranceprocess ResultOfCall has no REVOKED errorId.
RESULT_OF_CALL_ERROR_IDS: Final = {"REVOKED": "APPLICATION_ERROR"}

NO_CONSENT: Final = Result("INFO", "NOCONSENT")


def soap_error(exc: errors.ServiceError) -> SoapError:
    """The answer to ``exc``: its table entry, with the detail it tells (``errors.told``) as the text."""
    for cls in errors.answered_as(type(exc)).__mro__:
        if cls in ERRORS:
            detail = errors.told(exc)
            return dataclasses.replace(ERRORS[cls], text=detail) if detail else ERRORS[cls]
    return INTERNAL
