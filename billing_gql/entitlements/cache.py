"""The exact entitlement cache: each process answers ``entitlement``/``entitlements`` from
memory, kept coherent with PostgreSQL by LISTEN/NOTIFY (docs/architecture.md#entitlement-cache).

Coherence, in four rules:

1. **Every change notifies, in its transaction.** Triggers on the tables the check reads send
   ``pg_notify('billing_gql_entitlements', customer id | 'all')`` (migration
   ``2026-12-07T22:36:42``); a notification is delivered only after its transaction commits.
2. **A notification drops what it names** (one customer's entries, or everything) when the
   listener's callback runs (:meth:`EntitlementCache.invalidate`, :meth:`clear`).
3. **A read that began before a notification never stores after it.** A read takes a
   :meth:`~EntitlementCache.token` (a sequence number) before it queries the database; a store
   is refused when the customer (or everything) was invalidated after that token was taken.
   So once a notification has been processed, every stored answer reflects its commit.
4. **No listener, no cache.** While the listening connection is down or reconnecting, the
   cache is empty and bypassed (every check reads the database); when LISTEN is active again
   the cache starts empty (what changed in the gap was never notified) and refills lazily.

Time: an answer that depends on a period (a metered feature's ``used``) or on the granting
subscription's current period carries :attr:`Entitlement.expires`; it is a miss from that
moment on the billing clock. On the test clock, billing time itself is cached (a
``clock_state`` change notifies ``all``).

Memory: one LRU of at most ``BILLING_GQL_ENTITLEMENT_CACHE_SIZE`` entries (a customer's answer
for one feature, a customer's whole list, or an external id's customer id); 0 disables the
cache.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from billing_gql.entitlements.service import Entitlement

__all__ = ["CacheStats", "EntitlementCache"]

_Key = tuple[str, UUID | str, str]
"""``("f", customer, feature)``, ``("a", customer, "")`` or ``("x", external id, "")``."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bypassed: int = 0
    """Checks answered by the database because the listener was not connected."""
    refused: int = 0
    """Reads not stored because a notification arrived while they ran."""
    invalidations: int = 0
    clears: int = 0


@dataclass
class _Entry:
    customer: UUID
    value: object
    expires: datetime | None


class EntitlementCache:
    """One process's cache. Not thread-safe: used from the event loop only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.live = False
        """LISTEN is active: the cache may be read and filled."""
        self.stats = CacheStats()
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._by_customer: dict[UUID, set[_Key]] = {}
        self._seq = 0
        self._floor = 0
        """Tokens below this may not store (everything was dropped since they were taken)."""
        self._changed: OrderedDict[UUID, int] = OrderedDict()
        """Customer → sequence number of its last invalidation (bounded; see :meth:`_note`)."""
        self._clock: datetime | None = None
        self.local_writes = 0
        """Changes this process made (mutations, webhook deliveries): see ``checks.note_write``."""
        self.fenced = 0
        """``local_writes`` as of the last check that waited for the listener to catch up."""

    def __len__(self) -> int:
        return len(self._entries)

    # -- coherence -------------------------------------------------------------------------

    def token(self) -> int | None:
        """Taken before a database read whose answer may be stored; ``None``: bypass."""
        return self._seq if self.live else None

    def _may_store(self, token: int | None, customer: UUID | None) -> bool:
        if token is None or not self.live or token < self._floor:
            return False
        return customer is None or self._changed.get(customer, -1) <= token

    def invalidate(self, customer: UUID) -> None:
        """A notification named ``customer``: drop its entries; reads in flight will not store."""
        self.stats.invalidations += 1
        self._seq += 1
        self._changed[customer] = self._seq
        self._changed.move_to_end(customer)
        if len(self._changed) > max(1024, self.size):
            _, oldest = self._changed.popitem(last=False)
            self._floor = max(self._floor, oldest)  # forgetting it: refuse reads older than it
        for key in self._by_customer.pop(customer, ()):
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop everything (an ``all`` notification, a lost or new listening connection)."""
        self.stats.clears += 1
        self._seq += 1
        self._floor = self._seq
        self._changed.clear()
        self._entries.clear()
        self._by_customer.clear()
        self._clock = None

    def connected(self) -> None:
        """LISTEN is active again: start empty, and serve from now on."""
        self.clear()
        self.live = True

    def disconnected(self) -> None:
        """The listening connection is gone: bypass until it is back."""
        self.live = False
        self.clear()

    # -- entries ---------------------------------------------------------------------------

    def _get(self, key: _Key, now: datetime | None) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires is not None and (now is None or now >= entry.expires):
            self._drop(key, entry)
            return None
        self._entries.move_to_end(key)
        return entry

    def _drop(self, key: _Key, entry: _Entry) -> None:
        del self._entries[key]
        keys = self._by_customer.get(entry.customer)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_customer[entry.customer]

    def _put(self, token: int | None, key: _Key, entry: _Entry) -> None:
        if self.size <= 0 or not self._may_store(token, entry.customer):
            if token is not None:
                self.stats.refused += 1
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._by_customer.get(old.customer, set()).discard(key)
        self._entries[key] = entry
        self._by_customer.setdefault(entry.customer, set()).add(key)
        while len(self._entries) > self.size:
            oldest, evicted = next(iter(self._entries.items()))
            self._drop(oldest, evicted)

    def customer_of(self, external_id: str) -> UUID | None:
        """The cached id of the customer with ``external_id`` (only known customers are kept)."""
        entry = self._get(("x", external_id, ""), None)
        return entry.value if entry is not None and isinstance(entry.value, UUID) else None

    def one(self, customer: UUID, feature: str, now: datetime | None) -> Entitlement | None:
        entry = self._get(("f", customer, feature), now)
        return entry.value if entry is not None and isinstance(entry.value, Entitlement) else None

    def all(self, customer: UUID, now: datetime | None) -> list[Entitlement] | None:
        entry = self._get(("a", customer, ""), now)
        return list(entry.value) if entry is not None and isinstance(entry.value, list) else None

    def put_one(
        self,
        token: int | None,
        customer: UUID,
        feature: str,
        value: Entitlement,
        external_id: str | None = None,
    ) -> None:
        if external_id is not None:
            self._put(token, ("x", external_id, ""), _Entry(customer, customer, None))
        self._put(token, ("f", customer, feature), _Entry(customer, value, value.expires))

    def put_all(self, token: int | None, customer: UUID, values: list[Entitlement]) -> None:
        ends = [v.expires for v in values if v.expires is not None]
        self._put(
            token, ("a", customer, ""), _Entry(customer, list(values), min(ends, default=None))
        )

    # -- billing time (test clock) ---------------------------------------------------------

    def clock(self) -> datetime | None:
        """The cached test-clock time (dropped with everything when ``clock_state`` changes)."""
        return self._clock if self.live else None

    def put_clock(self, token: int | None, value: datetime) -> None:
        if self._may_store(token, None):
            self._clock = value
