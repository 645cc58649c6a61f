"""Local emulators of the external services the example modules talk to.

Each emulator is a small ASGI app that follows the service's *published* API and webhook
formats closely enough for the example modules, their tests and ``crm-host demo`` to run
without the internet: ``emulators.sendgrid`` (SendGrid v3 Marketing Campaigns + signed Event
Webhook), and others beside it. They keep their state in memory, in a plain object the test
(or the demo) holds, so a test can both drive the service ("deliver this single send") and
look inside it ("which contacts are on this list?").

Run any of them on 127.0.0.1 with :func:`emulators.runner.serve` (a free port, a uvicorn
server in a thread, stopped on exit).
"""
