"""The event applier: applies normalized provider events (and operation results) to checkouts,
payments, subscriptions and grants; the re-fetch that settles event order."""
