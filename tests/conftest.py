"""The core's tests use the same test kit provider plugins use."""

pytest_plugins = ["billing_gql.testing"]
