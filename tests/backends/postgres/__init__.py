"""PostgreSQL backend tests (a package, so their module names never clash with other backends')."""
