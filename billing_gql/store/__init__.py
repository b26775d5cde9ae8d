"""The store's schema: the Piccolo table classes, one module per table family."""
