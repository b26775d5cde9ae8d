"""Operator access: scoped API keys, the audit log of mutations, and rate limits.

The one writer of ``api_keys`` (:mod:`.keys`), ``audit_log`` (:mod:`.audit`) and
``rate_limit_counters`` (:mod:`.rate_limits`).
"""
