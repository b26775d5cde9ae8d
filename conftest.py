"""Every test here (the core's and the first-party plugins') uses the plugin test kit."""

pytest_plugins = ["billing_gql.testing"]
