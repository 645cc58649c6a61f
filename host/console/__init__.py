"""The web console, served by the host under ``/console`` (same process as the API).

The console has no logic of its own: its pages call the same services of ``host/`` the API
routes call, and render the answers with Jinja2 templates and the console's own CSS and JS
(``static/``, no CDN, nothing fetched at run time). How to add a page: ``docs/console.md``.
"""
