"""The entitlement cache's coherence rules on the cache object itself (no database): a read that
began before a notification never stores after it, no listener means no cache, answers expire
with their period, and memory stays within the size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from billing_gql.entitlements.cache import EntitlementCache
from billing_gql.entitlements.service import Entitlement

NOW = datetime(2027, 3, 1, tzinfo=UTC)


def value(limit: int = 5, expires: datetime | None = None) -> Entitlement:
    return Entitlement("seats", True, Decimal(limit), Decimal(0), Decimal(limit), None, expires)


def live_cache(size: int = 100) -> EntitlementCache:
    cache = EntitlementCache(size)
    cache.connected()
    return cache


def test_a_read_begun_before_its_customer_was_notified_does_not_store() -> None:
    cache = live_cache()
    customer, other = uuid4(), uuid4()
    token = cache.token()
    cache.invalidate(customer)  # the notification lands while the read runs
    cache.put_one(token, customer, "seats", value())
    cache.put_one(token, other, "seats", value())  # another customer's read is unaffected
    assert cache.one(customer, "seats", NOW) is None
    assert cache.one(other, "seats", NOW) == value()
    assert cache.stats.refused == 1
    # A read begun after the notification stores.
    token = cache.token()
    cache.put_one(token, customer, "seats", value(7))
    assert cache.one(customer, "seats", NOW) == value(7)


def test_a_notification_drops_the_customers_entries_and_its_external_id() -> None:
    cache = live_cache()
    customer = uuid4()
    token = cache.token()
    cache.put_one(token, customer, "seats", value(), external_id="usr_1")
    cache.put_all(token, customer, [value()])
    assert cache.customer_of("usr_1") == customer
    cache.invalidate(customer)
    assert cache.customer_of("usr_1") is None
    assert cache.one(customer, "seats", NOW) is None
    assert cache.all(customer, NOW) is None
    assert len(cache) == 0


def test_everything_cleared_refuses_every_read_begun_before() -> None:
    cache = live_cache()
    token = cache.token()
    cache.clear()
    cache.put_one(token, uuid4(), "seats", value())
    cache.put_clock(token, NOW)
    assert len(cache) == 0
    assert cache.clock() is None


def test_without_the_listener_nothing_is_read_or_stored() -> None:
    cache = live_cache()
    customer = uuid4()
    cache.put_one(cache.token(), customer, "seats", value())
    token = cache.token()
    cache.disconnected()
    assert cache.token() is None
    assert cache.one(customer, "seats", NOW) is None  # emptied
    cache.put_one(token, customer, "seats", value())  # a read begun before the loss
    cache.connected()
    cache.put_one(token, customer, "seats", value())  # ... nor after the reconnect
    assert len(cache) == 0
    cache.put_one(cache.token(), customer, "seats", value())
    assert cache.one(customer, "seats", NOW) == value()


def test_an_answer_expires_at_its_period_end() -> None:
    cache = live_cache()
    customer = uuid4()
    end = NOW + timedelta(days=3)
    cache.put_one(cache.token(), customer, "seats", value(expires=end))
    assert cache.one(customer, "seats", end - timedelta(microseconds=1)) is not None
    assert cache.one(customer, "seats", end) is None
    cache.put_all(cache.token(), customer, [value(), value(expires=end)])
    assert cache.all(customer, end) is None


def test_the_lru_holds_at_most_its_size() -> None:
    cache = live_cache(size=3)
    customers = [uuid4() for _ in range(5)]
    for customer in customers:
        cache.put_one(cache.token(), customer, "seats", value())
    assert len(cache) == 3
    assert cache.one(customers[0], "seats", NOW) is None
    assert cache.one(customers[4], "seats", NOW) is not None
    cache.invalidate(customers[4])  # the index of evicted entries stays consistent
    assert len(cache) == 2


def test_a_forgotten_notification_still_refuses_older_reads() -> None:
    """The record of notified customers is bounded; forgetting one raises the floor instead."""
    cache = live_cache(size=1)
    token = cache.token()
    first = uuid4()
    cache.invalidate(first)
    for _ in range(1100):  # past the record's bound (at least 1024)
        cache.invalidate(uuid4())
    cache.put_one(token, first, "seats", value())
    assert cache.one(first, "seats", NOW) is None


def test_size_zero_stores_nothing() -> None:
    cache = live_cache(size=0)
    cache.put_one(cache.token(), uuid4(), "seats", value())
    assert len(cache) == 0
