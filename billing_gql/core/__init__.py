"""The pure core: records of the billing domain and the domain events built from them (no I/O).

``billing_gql.money``, ``billing_gql.errors`` and ``billing_gql.validation`` belong to the core too
(kept at their public paths)."""
