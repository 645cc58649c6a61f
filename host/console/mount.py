"""Mounting the console on the host's FastAPI app: its routers, its static files and the
error handlers that render console errors as pages."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from host.console.errors import install_console_errors
from host.console.pages import (
    account,
    activity,
    attention,
    audit,
    auth,
    campaigns,
    contacts,
    home,
    modules,
    scripts,
    shadow_runs,
    templates,
    tenants,
    users,
)

# the more specific pages first: /console/modules/{id}/scripts before the module pages,
# a tenant's contacts, templates, campaigns, activity and shadow runs before the tenant pages
ROUTERS = (
    auth.router,
    home.router,
    account.router,
    users.router,
    attention.router,
    audit.router,
    scripts.router,
    modules.router,
    contacts.router,
    templates.router,
    campaigns.router,
    activity.router,
    shadow_runs.router,
    tenants.router,
)


def static_files() -> StaticFiles:
    """The console's CSS and JS. ``follow_symlink``: the README's install
    (``editable_mode=strict``) links each file from a tree of symlinks into the checkout,
    and without it every asset answered 404."""
    return StaticFiles(packages=[("host.console", "static")], follow_symlink=True)


def install_console(app: FastAPI) -> None:
    """Mount the console's pages and static files on the host's app."""
    app.mount("/console/static", static_files(), name="console-static")
    for router in ROUTERS:
        app.include_router(router)
    install_console_errors(app)
