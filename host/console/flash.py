"""One-shot messages ("Tenant acme created") shown on the page after a redirect."""

from __future__ import annotations

from fastapi import Request

from host.console_sessions import SignedIn


def flash(request: Request, viewer: SignedIn, message: str) -> None:
    """Leave ``message`` for the viewer's next page (stored with the session)."""
    request.app.state.host.console_sessions.set_flash(viewer.token_sha256, message)
