"""The HTTP surface (FastAPI): admin API, tenant API and the public webhook endpoint."""
