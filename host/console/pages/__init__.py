"""The console's pages, one router per area (FastAPI's "bigger applications" layout)."""
