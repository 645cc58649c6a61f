"""Prometheus metrics of one Host (``GET /metrics``)."""
