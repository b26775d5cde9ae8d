"""GraphQL over HTTP details: media types, status codes, limits, error masking."""

from __future__ import annotations

import json

from billing_gql.testing import ApiClient

GQL = "application/graphql-response+json"


async def post(
    api: ApiClient, body: object, accept: str = GQL, **headers: str
) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    response = await api.http.post(
        "/graphql",
        content=json.dumps(body) if not isinstance(body, bytes) else body,
        headers={"content-type": "application/json", "accept": accept, **headers},
    )
    return response.status_code, response.json(), response.headers["content-type"]


async def test_media_types_and_status_codes(api: ApiClient) -> None:
    status, body, ctype = await post(api, {"query": "{ plans { code } }"})
    assert (status, ctype) == (200, f"{GQL}; charset=utf-8") and body == {"data": {"plans": []}}
    status, body, ctype = await post(
        api, {"query": "{ plans { code } }"}, accept="application/json"
    )
    assert status == 200 and ctype.startswith("application/json")
    # A document that does not parse or validate: 400 with graphql-response+json, 200 with json.
    status, body, _ = await post(api, {"query": "{ plans { nope } }"})
    assert status == 400 and "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    status, body, _ = await post(api, {"query": "{ plans { nope } }"}, accept="application/json")
    assert status == 200 and body["errors"]
    status, body, _ = await post(api, {"query": "{ plans "})
    assert status == 400 and body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    # A syntax error is a parse failure whatever its text names (not the token limit's code).
    status, body, _ = await post(api, {"query": "{ plans { code } } tokens"})
    assert status == 400 and body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    # Not a GraphQL request at all.
    status, body, _ = await post(api, b"{not json")
    assert status == 400
    status, body, _ = await post(api, {"variables": {}})
    assert status == 400
    status, body, _ = await post(api, {"query": "{ plans { code } }", "variables": [1]})
    assert status == 400
    response = await api.http.post(
        "/graphql", content="{ plans { code } }", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    response = await api.http.post(
        "/graphql",
        content=json.dumps({"query": "{ plans { code } }"}),
        headers={"content-type": "application/json", "accept": "text/csv"},
    )
    assert response.status_code == 406


async def test_get_queries_and_no_mutations_over_get(api: ApiClient) -> None:
    response = await api.http.get(
        "/graphql", params={"query": "{ plans { code } }"}, headers={"accept": GQL}
    )
    assert response.status_code == 200 and response.json() == {"data": {"plans": []}}
    response = await api.http.get(
        "/graphql",
        params={"query": 'mutation { archivePlan(code: "x") { userErrors { code } } }'},
        headers={"accept": GQL},
    )
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    page = await api.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


async def test_alias_and_token_limits(api: ApiClient) -> None:
    aliases = "{ " + " ".join(f"a{i}: plans {{ code }}" for i in range(101)) + " }"
    status, body, _ = await post(api, {"query": aliases})
    assert status == 400
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    ok_aliases = "{ " + " ".join(f"a{i}: plans {{ code }}" for i in range(100)) + " }"
    status, body, _ = await post(api, {"query": ok_aliases})
    assert status == 200

    many_tokens = "{ plans { " + "code " * 5000 + "} }"
    status, body, _ = await post(api, {"query": many_tokens})
    assert status == 400
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    # Variables do not count towards the token limit.
    big_vars = {
        "query": "query($c: String!) { plan(code: $c) { code } }",
        "variables": {"c": "x" * 100_000},
    }
    status, body, _ = await post(api, big_vars)
    assert status == 200 and body["data"] == {"plan": None}


async def test_depth_limit_counts_fragments_and_skips_introspection(api: ApiClient) -> None:
    # Our schema is not deep enough to reach 13 levels, so check the rule on a recursive one.
    from graphql import build_schema, parse, validate

    from billing_gql.graphql.limits import build_rules

    schema = build_schema("type Query { n: N } type N { n: N, v: Int }")
    rules = build_rules(max_depth=12, max_aliases=100)

    def chain(depth: int) -> str:
        return "{ " + "n { " * (depth - 1) + "v" + " }" * depth

    assert validate(schema, parse(chain(12)), rules) == []
    errors = validate(schema, parse(chain(13)), rules)
    assert [e.extensions["code"] for e in errors] == ["GRAPHQL_VALIDATION_FAILED"]
    via_fragment = "query { n { ...A } } fragment A on N { " + "n { " * 11 + "v" + " }" * 11 + " }"
    assert validate(schema, parse(via_fragment), rules)
    introspection = (
        "{ __schema { types { fields { type { ofType { ofType { ofType { ofType "
        "{ ofType { ofType { ofType { name } } } } } } } } } } } }"
    )
    assert validate(build_schema("type Query { a: Int }"), parse(introspection), rules) == []


async def test_body_limit(api: ApiClient) -> None:
    payload = json.dumps(
        {"query": "{ plans { code } }", "variables": {"x": "y" * (2 * 1024 * 1024)}}
    )
    response = await api.http.post(
        "/graphql", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_healthz(api: ApiClient) -> None:
    response = await api.http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_unexpected_errors_are_masked(make_api) -> None:  # type: ignore[no-untyped-def]
    from collections.abc import Sequence

    from billing_gql import Provider, hookimpl

    class Broken(Provider):
        name = "broken"
        display_name = "Broken"

        @classmethod
        def capabilities(cls) -> frozenset[str]:
            raise RuntimeError("connection to sk_live_secret failed")

    class BrokenPlugin:
        @hookimpl
        def register_providers(self) -> Sequence[type[Provider]]:
            return [Broken]

    async with make_api(plugins=[BrokenPlugin()]) as api:
        result = await api.gql("{ providers { name capabilities } }")
    assert result.status == 200
    assert result.errors == [
        {
            "message": "Internal server error",
            "locations": [{"line": 1, "column": 3}],
            "path": ["providers"],
            "extensions": {"code": "INTERNAL_SERVER_ERROR"},
        }
    ]
    assert "sk_live" not in json.dumps(result.body)
