"""Route modules: device API, operator API, registry, TUF files, health and metrics."""
