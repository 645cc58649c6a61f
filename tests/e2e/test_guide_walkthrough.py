"""docs/writing-modules.md, done as a new integrator would: every file comes out of the guide
(the blocks marked ``<!-- file: PATH -->``), every step is the real ``crm-host`` command the
guide shows — scaffold, run against the guide's fake service, record, replay, test cases,
the campaign functions offline (contacts fixture, storage file across runs, cases with
``contacts``/``storage``/``storageAfter``), validate with a wrong egress host, upload to a
running server, enable, use."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cli_runner import Cli
from tests.e2e.server import free_port, running_host

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "writing-modules.md"
GUIDE_PORT = "8025"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)\n```", re.S)
COMMANDS_BLOCK = r"<!-- commands: {name} -->\n```sh\n(?P<body>.*?)\n```"
OUTPUT_BLOCK = r"<!-- output: {name} -->\n```\w*\n(?P<body>.*?)\n```"


def guide_files() -> dict[str, str]:
    files = {m["path"]: m["body"] + "\n" for m in FILE_BLOCK.finditer(GUIDE.read_text())}
    assert set(files) == {
        "acme-mail/manifest.json",
        "acme-mail/module.py",
        "fake_acmemail.py",
        "acme-mail/tests/templates.json",
        "acme-mail/tests/webhook.json",
        "acme-mail/tests/fixtures/contacts.json",
        "acme-mail/tests/campaign.json",
    }
    return files


def guide_commands(name: str) -> list[list[str]]:
    """The ``crm-host`` commands of the guide's ``<!-- commands: NAME -->`` block, each split
    as the shell would (backslash continuations joined)."""
    match = re.search(COMMANDS_BLOCK.format(name=re.escape(name)), GUIDE.read_text(), re.S)
    assert match, f"the guide has no commands block {name!r}"
    commands = [shlex.split(line) for line in match["body"].replace("\\\n", " ").splitlines()]
    assert all(command[0] == "crm-host" for command in commands)
    return [command[1:] for command in commands]


def guide_output(name: str) -> str:
    match = re.search(OUTPUT_BLOCK.format(name=re.escape(name)), GUIDE.read_text(), re.S)
    assert match, f"the guide has no output block {name!r}"
    return match["body"]


def line_of(source: str, needle: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if needle in line)


@contextmanager
def fake_service(workdir: Path, port: int) -> Iterator[None]:
    process = subprocess.Popen([sys.executable, "fake_acmemail.py", str(port)], cwd=workdir)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the guide's fake service did not start"
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_guide_from_scaffold_to_an_enabled_module(tmp_path: Path) -> None:
    files = guide_files()
    port = free_port()
    address = f"127.0.0.1:{port}"
    cli = Cli.in_dir(tmp_path)

    def put(path: str) -> None:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(files[path].replace(f"127.0.0.1:{GUIDE_PORT}", address))

    # 2. scaffold; 5. the manifest and script of the worked example
    assert cli.run("module", "new", "acme-mail", "--kind", "email").returncode == 0
    put("acme-mail/manifest.json")
    put("acme-mail/module.py")
    put("fake_acmemail.py")

    # 6-7. run against the fake, recording; the secret stays out of the recording
    settings = json.dumps({"api_key": "demo-key", "base_url": f"http://{address}/v1"})
    tape = "acme-mail/tests/recordings/templates.json"
    run = ("module", "run", "acme-mail", "ImportTemplates", "0", "2", "--settings", settings)
    with fake_service(tmp_path, port):
        recorded = cli.run(*run, "--allow-host", address, "--record", tape, "--show-log")
    assert recorded.returncode == 0, recorded.stderr
    pages = json.loads(recorded.stdout)
    assert [t["externalId"] for t in pages] == ["tpl-1", "tpl-2"]
    assert "log: templates at 0 : 2" in recorded.stderr
    assert "demo-key" not in (tmp_path / tape).read_text()

    # the fake is gone: offline, under the waiver the recorded 127.0.0.1 needs
    unwaived = cli.run(*run, "--replay", tape)
    assert unwaived.returncode == 1
    assert unwaived.stderr.startswith("error: egress_denied: fetch to 127.0.0.1 denied: ")
    replayed = cli.run(*run, "--replay", tape, "--allow-host", address)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == pages

    # 8. the guide's cases replace the example one
    (tmp_path / "acme-mail/tests/example_webhook.json").unlink()
    put("acme-mail/tests/templates.json")
    put("acme-mail/tests/webhook.json")
    guide = GUIDE.read_text()
    assert "--allow-host 127.0.0.1:8025 --replay acme-mail/tests/recordings/templates.json" in guide
    assert "crm-host module test acme-mail --allow-host 127.0.0.1:8025" in guide
    tested = cli.run("module", "test", "acme-mail", "--allow-host", address)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "tests/templates.json::first page of templates PASSED" in tested.stdout
    assert " 3 passed in " in tested.stdout

    # 8, contacts and storage: the campaign functions offline, then as cases
    campaign_offline(cli, files, put, address, port)

    # 9. a typo in egress is flagged, at the line of the fetch
    manifest_path = tmp_path / "acme-mail/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "egress": ["api.acmemail.exmaple"]}))
    flagged = cli.run("module", "validate", "acme-mail")
    assert flagged.returncode == 0
    fetch_line = line_of(files["acme-mail/module.py"], "response = fetch(")
    warning = (
        f"warning: module.py:{fetch_line}: fetch to api.acmemail.example will be denied: it is "
        "not in the manifest's egress (api.acmemail.exmaple)"
    )
    assert warning in flagged.stdout.splitlines()
    assert warning in GUIDE.read_text()  # the guide shows the very line
    manifest_path.write_text(json.dumps(manifest))
    assert "will be denied" not in cli.run("module", "validate", "acme-mail").stdout

    # 10. upload to a running host, enable, and use it there
    (tmp_path / "server").mkdir()
    with running_host(tmp_path / "server", CRM_HOST_EGRESS_ALLOW=address) as host:
        uploaded = cli.run(
            "module", "upload", "acme-mail", "--url", host.url, "--token", host.admin_token
        )
        assert uploaded.returncode == 0, uploaded.stderr
        shown = guide_output("upload").replace("https://crm-host.example.com", host.url)
        assert uploaded.stdout.splitlines() == shown.splitlines()
        script = tmp_path / "acme-mail/module.py"
        script.write_text(script.read_text() + "\n# changed\n")
        conflict = cli.run(
            "module", "upload", "acme-mail", "--url", host.url, "--token", host.admin_token
        )
        assert conflict.returncode == 1
        assert conflict.stderr.startswith("error: upload refused (409): module acme-mail@0.1.0")
        assert "manifest.json: $.version: already used" in conflict.stderr

        with host.client() as admin, fake_service(tmp_path, port):
            assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).is_success
            enabled = admin.put(
                "/api/v1/tenants/acme/modules/acme-mail",
                json={"version": "0.1.0", "settings": json.loads(settings)},
            )
            assert enabled.status_code == 200, enabled.text
            imported = admin.post("/api/v1/tenants/acme/modules/acme-mail/templates/import")
            assert imported.status_code == 200, imported.text
            assert imported.json()["imported"] == 3
            hook = admin.post(
                enabled.json()["webhookUrl"],
                json={"events": [{"type": "unsubscribe", "email": "bob@example.com"}]},
            )
            assert hook.status_code == 200, hook.text


def campaign_offline(
    cli: Cli, files: dict[str, str], put: Callable[[str], None], address: str, port: int
) -> None:
    """ExportContacts served from the guide's contacts fixture, PrepareCampaign's list kept in
    a storage file that CreateCampaign, run next, reads; the recordings they leave answer the
    guide's campaign cases, which state the storage before and after each call."""
    put("acme-mail/tests/fixtures/contacts.json")
    export, prepare, create = (
        [arg.replace(f"127.0.0.1:{GUIDE_PORT}", address) for arg in command]
        for command in guide_commands("campaign")
    )
    assert [command[:3] for command in (export, prepare, create)] == [
        ["module", "run", "acme-mail"]
    ] * 3
    assert "--contacts" in export and "--storage" in prepare and "--storage" in create
    state = cli.workdir / "state.json"
    with fake_service(cli.workdir, port):
        for command in (export, prepare):
            ran = cli.run(*command)
            assert ran.returncode == 0, ran.stderr
            assert json.loads(ran.stdout) is None
        assert json.loads(state.read_text()) == json.loads(guide_output("state.json"))
        created = cli.run(*create)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout) == json.loads(guide_output("CreateCampaign"))

        # without the storage file CreateCampaign finds no list: the guide's error line
        at = create.index("--storage")
        alone = [arg for arg in create[:at] + create[at + 2 :] if arg != "--record"]
        alone = [arg for arg in alone if not arg.endswith("create.json")]
        lost = cli.run(*alone)
    assert lost.returncode == 1
    raise_line = line_of(files["acme-mail/module.py"], "has no list: no PrepareCampaign")
    error = (
        "error: script_error: RuntimeError: campaign 42 has no list: no PrepareCampaign "
        f"(line {raise_line})"
    )
    assert lost.stderr.strip() == error
    assert error in GUIDE.read_text()
    assert json.loads(state.read_text()) == json.loads(guide_output("state.json"))
    tapes = {
        tape: (cli.workdir / f"acme-mail/tests/recordings/{tape}.json").read_text()
        for tape in ("export", "prepare", "create")
    }
    assert not [tape for tape, text in tapes.items() if "demo-key" in text]
    # the contacts the fixture serves reached the service: the ones with an email, in order
    upserts = [json.loads(e["request"]["body"]) for e in json.loads(tapes["export"])["exchanges"]]
    assert upserts == [
        {"email": contact["email"], "name": contact["name"]}
        for contact in json.loads(files["acme-mail/tests/fixtures/contacts.json"])
        if contact.get("email")
    ]
    assert len(upserts) == 2

    # the fake is gone: the guide's campaign cases replay what was just recorded
    put("acme-mail/tests/campaign.json")
    assert "crm-host module test acme-mail --allow-host 127.0.0.1:8025    # 6 passed" in (
        GUIDE.read_text()
    )
    tested = cli.run("module", "test", "acme-mail", "--allow-host", address)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    for name in (
        "contacts are upserted by email",
        "the first batch creates the list",
        "the campaign goes to the prepared list",
    ):
        assert f"tests/campaign.json::{name} PASSED" in tested.stdout
    assert " 6 passed in " in tested.stdout
