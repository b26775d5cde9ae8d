"""GraphQL-facing errors: ``UserError`` entries and the coded request errors.

Resolvers raise :class:`ApiError` subclasses for request-level problems (auth, selectors), which
become GraphQL errors with ``extensions.code``. Everything a caller can fix in its input becomes a
``userErrors`` entry through :func:`user_errors`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

import strawberry

from billing_gql.errors import ErrorCode, UserInputError, UserInputErrors
from billing_gql.money import MoneyError

UserErrorCode = strawberry.enum(ErrorCode, name="UserErrorCode", graphql_name_from="value")


class GraphQLErrorCode(StrEnum):
    """The ``extensions.code`` of GraphQL errors (docs/api.md#graphql-error-codes): strings in
    the response, never a schema type."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"
    UNKNOWN_METER = "UNKNOWN_METER"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    """The body is over the limit (HTTP 413): answered by ``web/observe.py``'s handler."""
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    RATE_LIMITED = "RATE_LIMITED"
    """Over a rate limit: HTTP 429 with Retry-After (``graphql.ratelimit``)."""


@strawberry.type
class UserError:
    """A problem with the input; ``field`` is the path from the argument (camelCase)."""

    field: list[str] | None
    message: str
    code: UserErrorCode  # type: ignore[valid-type]


class ApiError(Exception):
    """A GraphQL error with a code in ``extensions.code``."""

    code: ClassVar[GraphQLErrorCode] = GraphQLErrorCode.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.extensions: dict[str, Any] = {"code": self.code.value}


class Unauthenticated(ApiError):
    code = GraphQLErrorCode.UNAUTHENTICATED


class Forbidden(ApiError):
    code = GraphQLErrorCode.FORBIDDEN


class InvalidInput(ApiError):
    """A query's arguments are unusable (a malformed id or cursor, a contradictory selector)."""

    code = GraphQLErrorCode.INVALID_INPUT


class NotFound(ApiError):
    """A query names an object that does not exist where null is not an answer."""

    code = GraphQLErrorCode.NOT_FOUND


def user_errors(exc: BaseException, field_prefix: list[str] | None = None) -> list[UserError]:
    """Turn a service exception into ``userErrors`` entries (re-raises anything else)."""
    prefix = field_prefix or []
    if isinstance(exc, UserInputErrors):
        return [e for err in exc.errors for e in user_errors(err, field_prefix)]
    if isinstance(exc, UserInputError):
        field = prefix + exc.field if exc.field is not None else (prefix or None)
        return [UserError(field=field, message=exc.message, code=exc.code)]
    if isinstance(exc, MoneyError):
        return [UserError(field=prefix or None, message=str(exc), code=ErrorCode(exc.code))]
    raise exc
