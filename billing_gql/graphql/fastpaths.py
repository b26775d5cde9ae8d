"""Fast paths: documents the /graphql endpoint may answer with less than full execution.

A domain offers a *detector* (listed in ``billing_gql.graphql.schema.FAST_PATHS``) that looks at
a newly parsed and validated document's only operation and returns a :class:`FastPath` when it
recognises the shape, once per document (the result is cached with it):

- ``pre_execute`` rewrites the variables before the usual execution (``recordUsage``'s bulk
  path ingests the raw events itself and executes the document with an empty list);
- ``respond`` answers the operation's ``data`` itself, or ``None`` to fall back to the usual
  execution — which it must do for anything it does not answer exactly as GraphQL would
  (errors, unusual variable values), so responses never differ between the two paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from graphql import OperationDefinitionNode

from billing_gql.graphql.context import Context

__all__ = ["Detector", "FastPath", "PreExecutor", "Responder"]

PreExecutor = Callable[[Context, dict[str, Any] | None], Awaitable[dict[str, Any] | None]]
"""Runs before execution; returns the variables to execute the document with."""

Responder = Callable[[Context, dict[str, Any] | None], Awaitable[dict[str, Any] | None]]
"""Returns the response's ``data``, or ``None`` to execute the document as usual."""


@dataclass(frozen=True)
class FastPath:
    pre_execute: PreExecutor | None = None
    respond: Responder | None = None


Detector = Callable[[OperationDefinitionNode], FastPath | None]
