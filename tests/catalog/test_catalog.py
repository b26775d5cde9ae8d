"""Plans and meters through GraphQL over HTTP."""

from __future__ import annotations

from typing import Any

from billing_gql.testing import ApiClient

CREATE_PLAN = """
mutation($input: CreatePlanInput!) {
  createPlan(input: $input) {
    plan { id code name description interval intervalCount trialDays archived
           prices { amount currency }
           features { feature enabled limit }
           charges { meter model currency unitAmount packageSize includedQuantity
                     tiers { upTo unitAmount flatAmount } }
           providerRefs { provider ref currency } }
    userErrors { field message code }
  }
}
"""

CREATE_METER = """
mutation($input: CreateMeterInput!) {
  createMeter(input: $input) {
    meter { code name aggregation property providerRefs { provider ref currency } }
    userErrors { field message code }
  }
}
"""


def pro_plan(**extra: Any) -> dict[str, Any]:
    return {
        "code": "pro",
        "name": "Pro",
        "interval": "MONTH",
        "prices": [{"currency": "USD", "amount": "29.00"}, {"currency": "VND", "amount": "199000"}],
        "features": [{"feature": "seats", "limit": "5"}, {"feature": "sso"}],
        **extra,
    }


async def test_create_and_read_plan(api: ApiClient) -> None:
    await api.admin(
        CREATE_METER, {"input": {"code": "api_calls", "name": "API calls", "aggregation": "COUNT"}}
    )
    data = await api.admin(
        CREATE_PLAN,
        {
            "input": pro_plan(
                trialDays=14,
                description="For teams",
                charges=[
                    {
                        "meter": "api_calls",
                        "model": "GRADUATED",
                        "currency": "USD",
                        "includedQuantity": "1000",
                        "tiers": [
                            {"upTo": "10000", "unitAmount": "0.0015"},
                            {"upTo": None, "unitAmount": "0.001", "flatAmount": "5"},
                        ],
                    },
                ],
                providerRefs=[
                    {"provider": "stripe", "ref": "price_123", "currency": "USD"},
                    {"provider": "polar", "ref": "prod_1"},
                ],
            )
        },
    )
    plan = data["createPlan"]["plan"]
    assert plan["prices"] == [
        {"amount": "29.00", "currency": "USD"},
        {"amount": "199000", "currency": "VND"},
    ]
    assert plan["features"] == [
        {"feature": "seats", "enabled": True, "limit": "5"},
        {"feature": "sso", "enabled": True, "limit": None},
    ]
    assert plan["charges"][0]["tiers"] == [
        {"upTo": "10000", "unitAmount": "0.0015", "flatAmount": "0"},
        {"upTo": None, "unitAmount": "0.001", "flatAmount": "5"},
    ]
    assert plan["charges"][0]["includedQuantity"] == "1000"
    assert plan["trialDays"] == 14 and plan["intervalCount"] == 1 and not plan["archived"]
    assert {"provider": "polar", "ref": "prod_1", "currency": None} in plan["providerRefs"]

    # Public: no token needed to read the catalog.
    public = (
        await api.gql('{ plans { code prices { amount currency } } plan(code: "pro") { name } }')
    ).ok()
    assert public["plans"][0]["code"] == "pro"
    assert public["plan"]["name"] == "Pro"


async def test_amount_rules(api: ApiClient) -> None:
    result = await api.gql(
        CREATE_PLAN,
        {
            "input": pro_plan(
                prices=[
                    {"currency": "USD", "amount": "29.001"},
                    {"currency": "VND", "amount": "1.5"},
                    {"currency": "KWD", "amount": "1.500"},
                    {"currency": "ZZZ", "amount": "1"},
                    {"currency": "EUR", "amount": "-1.00"},
                ]
            )
        },
        admin=True,
    )
    errors = result.data["createPlan"]["userErrors"]
    assert result.data["createPlan"]["plan"] is None
    assert {"field": ["input", "prices", "0", "amount"], "code": "INVALID_AMOUNT"} in [
        {"field": e["field"], "code": e["code"]} for e in errors
    ]
    codes = {tuple(e["field"]): e["code"] for e in errors}
    assert codes[("input", "prices", "1", "amount")] == "INVALID_AMOUNT"
    assert codes[("input", "prices", "3", "currency")] == "INVALID_CURRENCY"
    assert codes[("input", "prices", "4", "amount")] == "INVALID_AMOUNT"
    assert ("input", "prices", "2", "amount") not in codes  # "1.500" KWD is fine
    # Nothing was written.
    assert (await api.gql("{ plans { code } }")).ok()["plans"] == []


async def test_json_number_amount_is_rejected(api: ApiClient) -> None:
    plan = pro_plan(prices=[{"currency": "USD", "amount": 29.0}])
    result = await api.gql(CREATE_PLAN, {"input": plan}, admin=True)
    assert result.status == 400
    assert "Decimal values are strings" in result.errors[0]["message"]


async def test_29_000_usd_is_29_00(api: ApiClient) -> None:
    data = await api.admin(
        CREATE_PLAN, {"input": pro_plan(prices=[{"currency": "usd", "amount": "29.000"}])}
    )
    assert data["createPlan"]["plan"]["prices"] == [{"amount": "29.00", "currency": "USD"}]


async def test_duplicate_code_and_bad_charges(api: ApiClient) -> None:
    await api.admin(CREATE_PLAN, {"input": pro_plan()})
    again = (await api.gql(CREATE_PLAN, {"input": pro_plan()}, admin=True)).data["createPlan"]
    assert again["userErrors"] == [
        {
            "field": ["input", "code"],
            "message": again["userErrors"][0]["message"],
            "code": "ALREADY_EXISTS",
        }
    ]
    bad = (
        await api.gql(
            CREATE_PLAN,
            {
                "input": pro_plan(
                    code="x",
                    charges=[
                        {
                            "meter": "nope",
                            "model": "PER_UNIT",
                            "currency": "USD",
                            "unitAmount": "1",
                        },
                        {"meter": "nope", "model": "PACKAGE", "currency": "USD", "unitAmount": "1"},
                        {
                            "meter": "nope",
                            "model": "GRADUATED",
                            "currency": "USD",
                            "tiers": [
                                {"upTo": "10", "unitAmount": "1"},
                                {"upTo": "5", "unitAmount": "1"},
                            ],
                        },
                    ],
                )
            },
            admin=True,
        )
    ).data["createPlan"]["userErrors"]
    fields = {(tuple(e["field"]), e["code"]) for e in bad}
    assert (("input", "charges", "0", "meter"), "UNKNOWN_METER") in fields
    assert (("input", "charges", "1", "packageSize"), "INVALID_INPUT") in fields
    assert (("input", "charges", "2", "tiers", "1", "upTo"), "INVALID_INPUT") in fields


async def test_update_plan_semantics(api: ApiClient) -> None:
    await api.admin(CREATE_PLAN, {"input": pro_plan(description="old")})
    update = """mutation($input: UpdatePlanInput!) { updatePlan(input: $input) {
        plan { name description features { feature limit } prices { amount currency } }
        userErrors { field code message } } }"""
    data = await api.admin(update, {"input": {"code": "pro", "name": "Pro 2"}})
    plan = data["updatePlan"]["plan"]
    assert plan["name"] == "Pro 2" and plan["description"] == "old"
    assert len(plan["features"]) == 2
    data = await api.admin(
        update,
        {
            "input": {
                "code": "pro",
                "description": None,
                "features": [{"feature": "seats", "limit": "10"}],
                "prices": [{"currency": "USD", "amount": "39"}],
            }
        },
    )
    plan = data["updatePlan"]["plan"]
    assert plan["description"] is None
    assert plan["features"] == [{"feature": "seats", "limit": "10"}]
    assert plan["prices"] == [{"amount": "39.00", "currency": "USD"}]
    missing = await api.gql(update, {"input": {"code": "nope", "name": "x"}}, admin=True)
    assert missing.data["updatePlan"]["userErrors"][0]["code"] == "NOT_FOUND"
    null_name = await api.gql(update, {"input": {"code": "pro", "name": None}}, admin=True)
    assert null_name.data["updatePlan"]["userErrors"][0]["code"] == "INVALID_INPUT"


async def test_archive_plan(api: ApiClient) -> None:
    await api.admin(CREATE_PLAN, {"input": pro_plan()})
    data = await api.admin(
        'mutation { archivePlan(code: "pro") { plan { archived } userErrors { code } } }'
    )
    assert data["archivePlan"]["plan"]["archived"] is True
    assert (await api.gql("{ plans { code } }")).ok()["plans"] == []
    listed = await api.admin("{ plans(includeArchived: true) { code archived } }")
    assert listed["plans"] == [{"code": "pro", "archived": True}]
    # Archived plans are the operator's business: the public never sees them.
    public = (await api.gql("{ plans(includeArchived: true) { code archived } }")).ok()
    assert public["plans"] == []


async def test_meters(api: ApiClient) -> None:
    data = await api.admin(
        CREATE_METER,
        {
            "input": {
                "code": "tokens",
                "name": "Tokens",
                "aggregation": "SUM",
                "property": "tokens",
                "providerRefs": [{"provider": "polar", "ref": "tokens_used"}],
            }
        },
    )
    assert data["createMeter"]["meter"]["aggregation"] == "SUM"
    dup = await api.gql(
        CREATE_METER, {"input": {"code": "tokens", "name": "T", "aggregation": "SUM"}}, admin=True
    )
    assert dup.data["createMeter"]["userErrors"][0]["code"] == "ALREADY_EXISTS"
    listed = await api.admin("{ meters { code property providerRefs { ref } } }")
    assert listed["meters"] == [
        {"code": "tokens", "property": "tokens", "providerRefs": [{"ref": "tokens_used"}]}
    ]


async def test_negative_usage_prices_are_invalid_amounts(api: ApiClient) -> None:
    await api.admin(
        CREATE_METER, {"input": {"code": "calls", "name": "Calls", "aggregation": "COUNT"}}
    )
    result = await api.gql(
        CREATE_PLAN,
        {
            "input": pro_plan(
                charges=[
                    {
                        "meter": "calls",
                        "model": "PER_UNIT",
                        "currency": "USD",
                        "unitAmount": "-0.01",
                    },
                    {
                        "meter": "calls",
                        "model": "GRADUATED",
                        "currency": "USD",
                        "tiers": [{"upTo": None, "unitAmount": "1", "flatAmount": "-5"}],
                    },
                ]
            )
        },
        admin=True,
    )
    errors = {tuple(e["field"]): e["code"] for e in result.data["createPlan"]["userErrors"]}
    assert errors == {
        ("input", "charges", "0", "unitAmount"): "INVALID_AMOUNT",
        ("input", "charges", "1", "tiers", "0", "flatAmount"): "INVALID_AMOUNT",
    }


def test_settings_never_show_secrets() -> None:
    from billing_gql.settings import Settings

    settings = Settings.from_env(
        {
            "BILLING_GQL_ADMIN_KEYS": "adm1n-secret",
            "DATABASE_URL": "postgresql://u:pw-secret@h/db",
            "BILLING_GQL_STRIPE_API_KEY": "sk_live_secret",
        }
    )
    shown = repr(settings)
    assert "adm1n-secret" not in shown and "pw-secret" not in shown
    assert "sk_live_secret" not in shown
