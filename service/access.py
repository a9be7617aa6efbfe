"""Which calling system may make which SOAP call: the permission table. Pure.

Care systems call over mutual TLS; the system's HSA id is read from its client certificate
(``soap/caller.py``). The permission table (``INTYG_PERMISSIONS_FILE``, read by ``config.py``) names
each consumer and what it may do: which operations, for which care givers, at which logical
addresses, as the national service platform's routing and permissions do (README "Callers"). Without a table
(the embedded development default, on loopback only) every caller is ``DEVELOPMENT_CONSUMER``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from service import errors


@dataclass(frozen=True, slots=True)
class Consumer:
    """One calling system and its permissions. ``None`` for a set means "all".

    ``operations`` holds contract operation names ("RegisterCertificate": every version) or names with
    a major version ("GetCertificate:2": that version only).
    """

    hsa_id: str
    name: str
    operations: frozenset[str] | None = None
    care_givers: frozenset[str] | None = None
    logical_addresses: frozenset[str] | None = None

    def may_call(self, operation: str, major: int) -> bool:
        return self.operations is None or not self.operations.isdisjoint({operation, f"{operation}:{major}"})

    def may_address(self, logical_address: str) -> bool:
        return self.logical_addresses is None or logical_address in self.logical_addresses


# The embedded default's only caller: no certificate, no table, everything allowed (loopback only).
DEVELOPMENT_CONSUMER = Consumer(hsa_id="development", name="development consumer (no permission table)")

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


def require_call(consumer: Consumer, *, operation: str, major: int, logical_address: str) -> None:
    """A consumer calls only the operations, and only at the logical addresses, its entry names."""
    if not consumer.may_call(operation, major):
        raise errors.CallerNotPermitted("the calling system may not call this operation")
    if not consumer.may_address(logical_address):
        raise errors.CallerNotPermitted("the calling system may not call this logical address")
