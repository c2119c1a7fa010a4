"""neo-exporter: a Prometheus exporter for ProjectDiscovery Neo's usage API."""

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it here)
