"""Which calling system may make which SOAP call: the permission table. Pure.

Care systems call over mutual TLS; the system's HSA id is read from its client certificate
(``soap/caller.py``). The permission table (``INTYG_PERMISSIONS_FILE``, read by ``loader.py`` and
checked by ``permission_table`` here) names each consumer and what it may do: which operations, for
which care givers, at which logical addresses, as the national service platform's routing and
permissions do (README.md, "Callers"). Without a table
(the embedded development default, on loopback only) every caller is ``DEVELOPMENT_CONSUMER``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from service import errors
from service.model import Party


@dataclass(frozen=True, slots=True)
class Consumer:
    """One calling system and its permissions. ``None`` for a set means "all".

    ``operations`` holds contract operation names ("RegisterCertificate": every version) or names with
    a major version ("GetCertificate:2": that version only). ``recipient`` is the recipient the system
    is (its part code), where it is one: it reads and sets statuses as that part only, and a system that
    is no recipient acts as none (``any_part``: as every part, the development consumer only).
    """

    hsa_id: str
    name: str
    operations: frozenset[str] | None = None
    care_givers: frozenset[str] | None = None
    logical_addresses: frozenset[str] | None = None
    recipient: Party | None = None
    any_part: bool = False

    @property
    def recipient_scope(self) -> frozenset[Party] | None:
        """The recipients' parts this system may act as (``model.Caller.recipient_scope``)."""
        if self.any_part:
            return None
        return frozenset({self.recipient}) if self.recipient is not None else frozenset()

    def may_call(self, operation: str, major: int) -> bool:
        return self.operations is None or not self.operations.isdisjoint({operation, f"{operation}:{major}"})

    def may_address(self, logical_address: str) -> bool:
        return self.logical_addresses is None or logical_address in self.logical_addresses


# The embedded default's only caller: no certificate, no table, everything allowed (loopback only).
DEVELOPMENT_CONSUMER = Consumer(
    hsa_id="development", name="development consumer (no permission table)", any_part=True
)

# The audit trail's name for a system that did not prove who it is.
UNIDENTIFIED = "unidentified"


@dataclass(frozen=True, slots=True)
class PermissionTable:
    """The consumers of the permission table, by HSA id."""

    consumers: Mapping[str, Consumer] = field(default_factory=dict)

    @classmethod
    def of(cls, consumers: Iterable[Consumer]) -> PermissionTable:
        table = {}
        for consumer in consumers:
            if consumer.hsa_id in table:
                raise ValueError(f"the permission table names {consumer.hsa_id} twice")
            table[consumer.hsa_id] = consumer
        return cls(MappingProxyType(table))

    def consumer(self, hsa_id: str) -> Consumer:
        found = self.consumers.get(hsa_id)
        if found is None:
            raise errors.CallerNotPermitted("the calling system is not in the permission table")
        return found


class ServedContract(Protocol):
    """What the table is checked against: a contract the service serves (``soap.contracts.Contract``)."""

    @property
    def operation(self) -> str: ...
    @property
    def major(self) -> int: ...
    @property
    def for_citizen(self) -> bool: ...


def permission_table(consumers: Iterable[Consumer], served: Sequence[ServedContract]) -> PermissionTable:
    """The table of ``consumers``, each checked against the contracts ``served``. Raises ValueError
    naming the consumer for an operation not served, or for a contract acting for a citizen granted
    to a system limited to some care givers."""
    listed = tuple(consumers)
    known = {c.operation for c in served} | {f"{c.operation}:{c.major}" for c in served}
    for consumer in listed:
        unknown = sorted((consumer.operations or frozenset()) - known)
        if unknown:
            raise ValueError(f"{consumer.hsa_id}: not operations this service serves: {', '.join(unknown)}")
        # A citizen's consent, lists and reads reach every care giver's certificates, and withdrawing
        # consent deletes them (DOMAIN.md rule 6): a system limited to some care givers may not.
        granted = [
            f"{c.operation}:{c.major}"
            for c in served
            if c.for_citizen and consumer.may_call(c.operation, c.major)
        ]
        if granted and consumer.care_givers is not None:
            raise ValueError(
                f"{consumer.hsa_id} is limited to some care givers but is granted {', '.join(granted)}, which "
                'act for a citizen across every care giver: only a consumer with "care_givers": ["*"] '
                "may call them (list this consumer's operations without them)"
            )
    return PermissionTable.of(listed)


def require_call(consumer: Consumer, *, operation: str, major: int, logical_address: str) -> None:
    """A consumer calls only the operations, and only at the logical addresses, its entry names."""
    if not consumer.may_call(operation, major):
        raise errors.CallerNotPermitted("the calling system may not call this operation")
    if not consumer.may_address(logical_address):
        raise errors.CallerNotPermitted("the calling system may not call this logical address")
