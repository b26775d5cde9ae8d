"""Test-only crash points: ``BILLING_GQL_CRASHPOINT=<name>`` (or ``<name>@<n>``, the n-th time
it is reached; default the first) makes the process kill itself with SIGKILL when execution
reaches :func:`crashpoint` with that name — no cleanup, no ``finally``, exactly as a power cut
or the OOM killer would. The crash-safety tests (``tests/crash/``) use it to stop a real server
at a chosen point and check what a restart makes of the state left behind.

Never set it in production. Unset, :func:`crashpoint` is one comparison of a module global.

The names (each a place where a crash must lose nothing):

- ``webhook.stored``: a provider delivery is stored, not applied yet;
- ``webhook.applied``: its apply committed, the answer not sent yet;
- ``checkout.claimed``: a checkout's provider session is claimed, the provider not called;
- ``renewal.stored``: a renewal checkout is stored, its provider session not created yet;
- ``renewals.issued``: the renewal sweep issued one renewal checkout, more are due;
- ``outgoing.sent``: an outgoing webhook was answered 2xx, not marked delivered yet;
- ``usage.stored``: a ``recordUsage`` batch is stored, the answer not sent yet.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "crashpoint"]

ENV = "BILLING_GQL_CRASHPOINT"


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, nth = value.partition("@")
    return name.strip(), int(nth) if nth.strip() else 1


_target = _parse(os.environ.get(ENV))
_hits: list[int] = [0]


def crashpoint(name: str) -> None:
    """SIGKILL this process if ``BILLING_GQL_CRASHPOINT`` names ``name`` (test-only)."""
    if _target is None or _target[0] != name:
        return
    _hits[0] += 1
    if _hits[0] >= _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
