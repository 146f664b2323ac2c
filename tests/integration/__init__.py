"""Cross-plugin tests: run in the tox `integration` environment, where all four plugins are installed."""
