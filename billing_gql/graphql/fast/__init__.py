"""Fast paths: hot operations executed without Strawberry's resolver machinery."""
