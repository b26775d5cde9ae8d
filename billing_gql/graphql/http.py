"""GraphQL over HTTP at ``/graphql``, following the GraphQL-over-HTTP specification.

A lean Litestar handler rather than Strawberry's stock controller: it negotiates
``application/graphql-response+json`` (with its status codes) and ``application/json``, caches
parsed and validated documents by their text, runs graphql-core's ``execute`` with Strawberry's
execution context, and masks unexpected errors. The stock controller's per-request dependency
work cost ~4× the throughput of a plain route here (docs/architecture.md#performance-notes).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from inspect import isawaitable
from time import perf_counter
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    validate,
)
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from strawberry.execution.is_awaitable import optimized_is_awaitable

from billing_gql import metrics, tracing
from billing_gql.context import ServiceContext
from billing_gql.entitlements.checks import note_write
from billing_gql.graphql.context import Context
from billing_gql.graphql.errors import ApiError, GraphQLErrorCode
from billing_gql.graphql.fastpaths import FastPath
from billing_gql.graphql.inputs import literal_problems, may_hold_unstorable, variables_problem
from billing_gql.graphql.limits import VALIDATION_FAILED, build_rules, cost_limit_rule
from billing_gql.graphql.media import GRAPHQL_RESPONSE, JSON, media_type
from billing_gql.graphql.principals import request_id, resolve_viewer
from billing_gql.graphql.ratelimit import check_rate_limit, limited_body
from billing_gql.graphql.schema import FAST_PATHS, build_schema
from billing_gql.settings import GraphQLSettings

log = logging.getLogger(__name__)

_CACHE_ENTRIES = 1024
_TOKEN_BYTES = 600
"""Memory a parsed document keeps per token: its Token, node and Location objects (~500
bytes each measured with tracemalloc on graphql-core 3.3)."""


@dataclass(frozen=True)
class _Prepared:
    document: DocumentNode | None
    errors: list[GraphQLError]
    fast: FastPath | None = None
    """A fast path for this document's only operation (see ``graphql.fastpaths``)."""
    size: int = 0
    """Estimated bytes the entry keeps in memory: its text, and its tokens' objects."""


def _document_size(query: str, document: DocumentNode) -> int:
    """An estimate of the memory a cached document holds: the query text (the key, and the
    string values copied out of it) and every token the parser kept (its location chain)."""
    tokens = 0
    token = document.loc.start_token if document.loc is not None else None
    while token is not None:
        tokens += 1
        token = token.next
    return 2 * len(query) + _TOKEN_BYTES * tokens


class DocumentCache:
    """Parsed and validated documents by query text (LRU). The rules are built once.

    Only documents that parsed and validated are cached (a failure is prepared again when
    sent again), only small ones (at most 1/64 of the budget each), and the cache evicts the
    least recently used entries to stay within ``GraphQLSettings.document_cache_bytes`` of
    estimated memory and 1,024 entries: distinct large documents cannot grow the process.
    """

    def __init__(self, settings: GraphQLSettings) -> None:
        self.schema = build_schema()
        self.core_schema = self.schema._schema
        self.rules = build_rules(settings.max_depth, settings.max_aliases)
        self.cost_rules = (cost_limit_rule(settings.max_query_cost),)
        """Checked once the document is otherwise valid (its fields exist, its fragments do
        not cycle), so a document is told one kind of problem at a time."""
        self.max_tokens = settings.max_tokens
        self.max_query_bytes = settings.max_query_bytes
        self.max_bytes = settings.document_cache_bytes
        self.max_entry_bytes = settings.document_cache_bytes // 64
        self.cached_bytes = 0
        """The estimated size of what the cache holds (the sum of its entries' ``size``)."""
        self._too_many_tokens = f"Syntax Error: Document contains more than {self.max_tokens} "
        self._entries: OrderedDict[str, _Prepared] = OrderedDict()

    def prepare(self, query: str) -> _Prepared:
        found = self._entries.get(query)
        if found is not None:
            self._entries.move_to_end(query)
            return found
        prepared = self._prepare(query)
        if prepared.errors or not 0 < prepared.size <= self.max_entry_bytes:
            return prepared
        self._entries[query] = prepared
        self.cached_bytes += prepared.size
        while len(self._entries) > _CACHE_ENTRIES or self.cached_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.cached_bytes -= evicted.size
        return prepared

    def cached(self, query: str) -> bool:
        """Whether ``query`` is in the cache (without touching its recency)."""
        return query in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    async def execute(
        self,
        document: DocumentNode,
        context: Context,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> ExecutionResult:
        """Execute a prepared query or mutation with graphql-core and Strawberry's execution
        context (subscriptions go through ``subscribe``, in ``graphql.ws``)."""
        result = execute(
            self.core_schema,
            document,
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            executor_class=self.schema.execution_context_class,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
        )
        if isawaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        return result

    def _prepare(self, query: str) -> _Prepared:
        size = len(query) if query.isascii() else len(query.encode("utf-8"))
        if size > self.max_query_bytes:
            error = GraphQLError(f"The document is larger than {self.max_query_bytes} bytes.")
            return _Prepared(None, [_with_code(error, VALIDATION_FAILED)])
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError as error:
            # graphql-core reports the token limit as a syntax error; it is our limit, coded as
            # the other limits are. Matched by the message's start: a syntax error's text can
            # quote the document ("Unexpected Name 'tokens'"), never begin with it.
            too_long = error.message.startswith(self._too_many_tokens)
            code = VALIDATION_FAILED if too_long else GraphQLErrorCode.GRAPHQL_PARSE_FAILED.value
            return _Prepared(None, [_with_code(error, code)])
        errors = (
            validate(self.core_schema, document, self.rules)
            or validate(self.core_schema, document, self.cost_rules)
            or literal_problems(query, document)
        )
        if errors:
            return _Prepared(document, [_with_code(e, VALIDATION_FAILED) for e in errors])
        return _Prepared(document, [], _fast_path(document), _document_size(query, document))


def _fast_path(document: DocumentNode) -> FastPath | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1:
        return None
    for detect in FAST_PATHS:
        found = detect(operations[0])
        if found is not None:
            return found
    return None


def _with_code(error: GraphQLError, code: str) -> GraphQLError:
    if not (error.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), "code": code}
    return error


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_json(raw: bytes | str) -> Any:
    """Parse a request body: orjson (a batch of 1000 usage events parses in a third of the
    standard library's time), the standard library for integers beyond 64 bits; NaN and
    Infinity are refused by both (they are not JSON)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw, parse_constant=_no_constant)


def request_problem(query: Any, variables: Any, operation_name: Any) -> str | None:
    """What is wrong with a request's ``query``, ``variables`` and ``operationName`` (over
    HTTP or in a WebSocket ``subscribe``), else ``None``."""
    if not isinstance(query, str) or not query.strip():
        return "a GraphQL request needs a 'query' string"
    if variables is not None and not isinstance(variables, dict):
        return "'variables' must be an object"
    if operation_name is not None and not isinstance(operation_name, str):
        return "'operationName' must be a string"
    return None


def format_error(error: GraphQLError) -> dict[str, Any]:
    """An error as the response shows it; an unexpected exception's text is logged, never
    shown."""
    original = error.original_error
    if (
        error.path is not None
        and original is not None
        and not isinstance(original, ApiError | GraphQLError)
    ):
        # An unexpected exception inside a resolver: log it, never show its text.
        log.error("resolver failed at %s", ".".join(map(str, error.path)), exc_info=original)
        return {
            "message": "Internal server error",
            "locations": [loc._asdict() for loc in error.locations or []],
            "path": error.path,
            "extensions": {"code": GraphQLErrorCode.INTERNAL_SERVER_ERROR.value},
        }
    formatted: dict[str, Any] = dict(error.formatted)
    return formatted


def result_body(result: ExecutionResult) -> dict[str, Any]:
    """An execution result as the response's JSON object (``errors`` only when there are)."""
    body: dict[str, Any] = {}
    if result.errors:
        body["errors"] = [format_error(e) for e in result.errors]
    body["data"] = result.data
    return body


def _respond(
    payload: dict[str, Any], media: str, status: int, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        content=json.dumps(payload, separators=(",", ":")).encode("utf-8"),
        status_code=status,
        media_type=f"{media}; charset=utf-8",
        headers=headers,
    )


def _request_error(
    message: str, media: str, status: int = 400, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return _respond({"errors": [{"message": message}]}, media, status, headers)


class GraphQLEndpoint:
    """Executes GraphQL requests for the routes below."""

    def __init__(self, cache: DocumentCache) -> None:
        self.cache = cache

    async def run(
        self,
        request: Request[Any, Any, Any],
        params: dict[str, Any],
        media: str,
        *,
        method: str,
        raw: bytes | None = None,
    ) -> Response[bytes]:
        """Run the request ``params``; ``raw`` is the POST body they were parsed from."""
        query = params.get("query")
        variables = params.get("variables")
        operation_name = params.get("operationName")
        extensions = params.get("extensions")
        problem = request_problem(query, variables, operation_name)
        if problem is not None:
            return _request_error(problem, media)
        if extensions is not None and not isinstance(extensions, dict):
            return _request_error("'extensions' must be an object", media)
        assert isinstance(query, str)  # request_problem checked it

        started = perf_counter()
        prepared = self.cache.prepare(query)
        request_error_status = 400 if media == GRAPHQL_RESPONSE else 200
        if prepared.errors or prepared.document is None:
            metrics.count_graphql((), "none", "error", perf_counter() - started)
            return _respond(
                {"errors": [e.formatted for e in prepared.errors]}, media, request_error_status
            )
        operation = get_operation_ast(prepared.document, operation_name)
        if operation is None:
            message = (
                f'unknown operation "{operation_name}"'
                if operation_name
                else "the document has several operations: name one in 'operationName'"
            )
            return _respond({"errors": [{"message": message}]}, media, request_error_status)
        if method == "GET" and operation.operation != OperationType.QUERY:
            return _request_error(
                f"{operation.operation.value} operations need POST",
                media,
                405,
                headers={"Allow": "POST"},
            )
        if operation.operation == OperationType.SUBSCRIPTION:
            return _respond(
                {
                    "errors": [
                        {"message": "subscriptions run over WebSocket (graphql-transport-ws)"}
                    ]
                },
                media,
                request_error_status,
            )
        fields = [
            s.name.value for s in operation.selection_set.selections if isinstance(s, FieldNode)
        ]
        outcome: list[str] = []
        tracing.annotate(
            **{"graphql.operation.type": operation.operation.value, "graphql.fields": fields}
        )
        try:
            return await self._execute(
                request,
                prepared,
                operation,
                variables=variables,
                operation_name=operation_name,
                media=media,
                raw=raw,
                outcome=outcome,
            )
        finally:
            seconds = perf_counter() - started
            outcome_name = outcome[0] if outcome else "error"
            metrics.count_graphql(fields, operation.operation.value, outcome_name, seconds)

    async def _execute(
        self,
        request: Request[Any, Any, Any],
        prepared: _Prepared,
        operation: OperationDefinitionNode,
        *,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        media: str,
        raw: bytes | None,
        outcome: list[str],
    ) -> Response[bytes]:
        """Execute a prepared query or mutation; ``outcome`` gets ``"ok"`` when it answered
        without errors, ``"limited"`` when a rate limit refused it (for the metrics)."""
        assert prepared.document is not None
        request_error_status = 400 if media == GRAPHQL_RESPONSE else 200
        if raw is None or may_hold_unstorable(raw):
            unstorable = variables_problem(variables)
            if unstorable is not None:
                return _respond({"errors": [unstorable.formatted]}, media, request_error_status)
        runtime: ServiceContext = request.app.state.runtime
        viewer = await resolve_viewer(runtime, request.headers.get("authorization"))
        address = request.client.host if request.client else None
        refused = await check_rate_limit(runtime, viewer, address, operation)
        if refused is not None:
            retry = {"Retry-After": str(refused.retry_after)}
            outcome.append("limited")
            return _respond(limited_body(refused), media, 429, headers=retry)
        context = Context(
            runtime=runtime,
            viewer=viewer,
            request_id=request_id(request.headers.get("x-request-id")),
        )
        fast = prepared.fast
        if fast is not None and fast.respond is not None:
            data = await fast.respond(context, variables)
            if data is not None:
                outcome.append("ok")
                return _respond({"data": data}, media, 200)
        if fast is not None and fast.pre_execute is not None:
            variables = await fast.pre_execute(context, variables)
        result = await self.cache.execute(prepared.document, context, variables, operation_name)
        if operation.operation == OperationType.MUTATION:
            note_write(runtime)  # this client's next entitlement check reads its own write
        if result.data is None and result.errors and _is_request_error(result):
            return _respond(
                {"errors": [e.formatted for e in result.errors]}, media, request_error_status
            )
        if not result.errors:
            outcome.append("ok")
        return _respond(result_body(result), media, 200)


def _is_request_error(result: ExecutionResult) -> bool:
    """Errors raised before execution started (variable coercion): no path on any of them."""
    return all(error.path is None for error in result.errors or [])


def graphql_routes(settings: GraphQLSettings, cache: DocumentCache) -> list[HTTPRouteHandler]:
    """The ``GET`` and ``POST /graphql`` handlers, preparing documents with ``cache`` (the
    WebSocket handler shares it)."""
    endpoint = GraphQLEndpoint(cache)
    graphiql_html = _graphiql_html() if settings.graphiql else None

    @post("/graphql", request_max_body_size=settings.max_body_bytes, status_code=200)
    async def graphql_post(request: Request[Any, Any, Any]) -> Response[bytes]:
        media = media_type(request.headers.get("accept"))
        if media is None:
            return _request_error(f"Accept {GRAPHQL_RESPONSE} or {JSON}", JSON, 406)
        content_type = request.headers.get("content-type", "")
        mime = content_type.split(";")[0].strip().lower()
        if mime != JSON:
            return _request_error("POST bodies must be application/json", media, 415)
        raw = await request.body()
        try:
            params = loads_json(raw)
        except (ValueError, UnicodeDecodeError):
            return _request_error("the body is not valid JSON", media)
        if not isinstance(params, dict):
            return _request_error("the body must be a JSON object", media)
        return await endpoint.run(request, params, media, method="POST", raw=raw)

    @get("/graphql", status_code=200)
    async def graphql_get(request: Request[Any, Any, Any]) -> Response[bytes]:
        accept = request.headers.get("accept", "")
        query_params = request.query_params
        if "query" not in query_params and graphiql_html and "text/html" in accept:
            return Response(content=graphiql_html.encode(), media_type="text/html; charset=utf-8")
        media = media_type(accept)
        if media is None:
            return _request_error(f"Accept {GRAPHQL_RESPONSE} or {JSON}", JSON, 406)
        params: dict[str, Any] = {}
        for name in ("query", "operationName"):
            if name in query_params:
                params[name] = query_params.get(name)
        for name in ("variables", "extensions"):
            raw = query_params.get(name)
            if raw is not None and raw != "":
                try:
                    params[name] = json.loads(raw)
                except ValueError:
                    return _request_error(f"'{name}' is not valid JSON", media)
        return await endpoint.run(request, params, media, method="GET")

    return [graphql_post, graphql_get]


def _graphiql_html() -> str:
    from strawberry.http.ides import get_graphql_ide_html

    return get_graphql_ide_html(graphql_ide="graphiql")
