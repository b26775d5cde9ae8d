"""GraphQL types, queries and mutations, one module per area (the faces)."""
