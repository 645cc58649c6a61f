"""``crm-host demo``: the whole product on one machine in under a minute.

:mod:`host.demo.servers` starts the SendGrid, Unisender and Telegram emulators and a host on
a temporary database (every server on 127.0.0.1, a free port each); :mod:`host.demo.scenario`
then plays a platform admin and a CRM over the host's HTTP API, and the emulators play the
services and their users (webhooks). The CLI command is :mod:`host.cli.demo`.
"""
