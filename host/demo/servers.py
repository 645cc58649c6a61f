"""The servers of the demo: four service emulators and one host, all on 127.0.0.1.

Each runs in a thread of this process (``emulators.runner.serve``); the host uses a SQLite
file in a temporary folder and waives the loopback refusal for exactly the emulators'
``host:port`` (the scenario's copies of the modules declare them in ``egress``). Leaving
the ``with demo_servers()`` block stops every server, closes the host (its sandbox workers
and job threads) and deletes the folder.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from emulators import mailchimp, sendgrid, telegram, unisender
from emulators.mailchimp import MailchimpState
from emulators.runner import LOOPBACK, RunningServer, serve
from emulators.sendgrid_state import SendGridState
from emulators.telegram import TelegramState
from emulators.unisender import UnisenderState
from host.config import HostSettings
from host.platform import Host

SENDGRID_API_KEY = "SG.demo-account-api-key-0123456789"
UNISENDER_API_KEY = "demo-unisender-api-key-0123456789"
TELEGRAM_TOKEN = "7000000001:AAdemoBotTokenForTheCrmHostDemo_01"
MAILCHIMP_API_KEY = "0123456789abcdefdemo0123456789ab-us6"


@dataclass
class DemoServers:
    """What the scenario talks to: the host's URL and admin token, the emulators' URLs, and
    the emulated accounts (for what their owners do by hand: seeding templates)."""

    host: Host
    host_server: RunningServer
    admin_token: str
    workdir: Path
    sendgrid: SendGridState
    unisender: UnisenderState
    telegram: TelegramState
    mailchimp: MailchimpState
    emulators: dict[str, RunningServer]

    @property
    def url(self) -> str:
        return self.host_server.url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextmanager
def demo_servers(*, sandbox_workers: int = 2) -> Iterator[DemoServers]:
    """Start everything; stop everything when the block ends (also on errors)."""
    from host.api.app import create_app

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crm-host-demo-")))
        accounts = (
            SendGridState(api_keys={SENDGRID_API_KEY}),
            UnisenderState(api_key=UNISENDER_API_KEY),
            TelegramState(
                token=TELEGRAM_TOKEN,
                bot_id=int(TELEGRAM_TOKEN.split(":")[0]),
                bot_name="Acme News",
                bot_username="acme_news_bot",
            ),
            MailchimpState(api_key=MAILCHIMP_API_KEY),
        )
        apps = (
            sendgrid.create_app(accounts[0]),
            unisender.create_app(accounts[1]),
            telegram.create_app(accounts[2]),
            mailchimp.create_app(accounts[3]),
        )
        names = ("sendgrid", "unisender", "telegram", "mailchimp")
        emulators = {n: stack.enter_context(serve(app)) for n, app in zip(names, apps, strict=True)}

        admin_token = secrets.token_urlsafe(24)
        port = free_port()
        settings = HostSettings(
            database_url=f"sqlite:///{workdir / 'demo.db'}",
            admin_token=admin_token,
            secret_key=secrets.token_urlsafe(32),
            public_url=f"http://{LOOPBACK}:{port}",
            egress_allow=[e.netloc for e in emulators.values()],
            sandbox_workers=sandbox_workers,
            campaign_poll_seconds=0.5,
        )
        host = stack.enter_context(Host(settings))  # started: campaign jobs run
        host_server = stack.enter_context(serve(create_app(host), port=port, timeout=30))
        yield DemoServers(
            host=host,
            host_server=host_server,
            admin_token=admin_token,
            workdir=workdir,
            sendgrid=accounts[0],
            unisender=accounts[1],
            telegram=accounts[2],
            mailchimp=accounts[3],
            emulators=emulators,
        )
