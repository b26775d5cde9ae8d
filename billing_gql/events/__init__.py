"""Events out: LISTEN/NOTIFY fan-out to GraphQL subscriptions and the app's webhook endpoints."""
