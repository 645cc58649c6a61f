"""Campaigns needing attention, through the console's HTTP app: the admin's list (reason,
time, tenant, module) and the resolution of one — the campaign's id in the service, or *not
created* — through the same service as ``POST …/campaigns/{id}/resolve``. Bad answers (an
empty or over-long id, another campaign's id, a campaign not flagged, no CSRF token, not an
admin) are refused with the reason and change nothing; a marketer sees the flag, read-only,
on their campaign's page.

A flagged campaign is made as the send job leaves one interrupted during a create call of a
module that does not declare it idempotent (``tests/host/test_campaign_job.py`` proves the
job does): stage ``creating``, status kept, ``attention_reason`` and ``attention_at`` set.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from host.api.app import create_app
from host.db.models import Campaign
from host.marketing.campaigns import CampaignDraft
from host.marketing.contact_rows import rows_from_json
from host.modules.packages import from_json_body
from host.platform import Host
from tests.host.conftest import json_body, make_host, table_dump
from tests.host.console_client import (
    FAST_HASHER,
    ConsoleVisitor,
    make_user,
    signed_in_admin,
    signed_in_user,
)

REASON = "interrupted during CRM_Marketing_CreateCampaign: it may or may not exist in the service"
FLAGGED_AT = datetime(2026, 11, 30, 9, 15, 0, tzinfo=UTC)


class World:
    def __init__(self, host: Host) -> None:
        self.host = host
        host.accounts.hasher = FAST_HASHER
        host.registry.upload(from_json_body(json_body(), max_script_bytes=64 * 1024))
        for tenant_id in ("acme", "globex"):
            host.tenants.create(tenant_id, tenant_id.title())
            host.tenants.configure(tenant_id, "sendmail", settings={"api_key": "k-12345678"})
            contact = {"id": "c1", "name": "Ann", "email": "ann@example.com"}
            host.contacts.upsert(tenant_id, rows_from_json([contact]))
        self.marketer = make_user(host, "mia@example.com", "marketer", "acme")
        self.integrator = make_user(host, "ivy@example.com", "integrator")
        self.app = create_app(host)

    def campaign(self, name: str, *, flagged: bool = True, tenant_id: str = "acme") -> str:
        """A queued campaign (no job runs here), flagged as an interrupted create leaves it."""
        draft = CampaignDraft(
            module="sendmail", name=name, type="Email", subject="Hello", senderName="Acme",
            senderEmail="news@acme.test", html="<p>Hi</p>", contactIds="all",
        )  # fmt: skip
        campaign_id = self.host.campaigns.create(tenant_id, draft).id
        if flagged:
            with self.host.db.transaction() as session:
                session.execute(
                    update(Campaign)
                    .where(Campaign.id == campaign_id)
                    .values(stage="creating", attention_reason=REASON, attention_at=FLAGGED_AT)
                )
        return campaign_id

    def row(self, campaign_id: str) -> tuple[object, ...]:
        with self.host.db.transaction() as session:
            row = session.get(Campaign, campaign_id)
            assert row is not None
            return (row.stage, row.status, row.external_id, row.attention_reason)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    host = make_host(tmp_path_factory.mktemp("attention") / "host.db")
    yield World(host)
    host.close()


@pytest.fixture(scope="module")
def admin(world: World) -> ConsoleVisitor:
    return signed_in_admin(world.app)


def _resolve(visitor: ConsoleVisitor, campaign_id: str, tenant_id: str = "acme", **form: str):
    return visitor.post(
        f"/console/attention/{tenant_id}/{campaign_id}/resolve",
        {"csrf_token": visitor.csrf(), **form},
    )


def test_an_admin_sees_the_flagged_campaigns_and_records_the_service_id(
    world: World, admin: ConsoleVisitor
) -> None:
    flagged = world.campaign("Spring sale")
    calm = world.campaign("Quiet one", flagged=False)
    page = admin.http.get("/console/attention")
    assert page.status_code == 200
    row = page.text[page.text.index(f"/console/attention/acme/{flagged}") :].split("</tr>")[0]
    for shown in ("Spring sale", "acme", "sendmail@1.0.0", "Draft", REASON, "2026-11-30 09:15:00"):
        assert shown in row, shown
    assert "Quiet one" not in page.text and calm not in page.text
    assert 'href="/console/attention"' in admin.http.get("/console").text  # in the navigation

    detail = admin.http.get(f"/console/attention/acme/{flagged}")
    assert detail.status_code == 200 and "Record the id" in detail.text
    answer = _resolve(admin, flagged, resolution="exists", externalId="  sg-1234  ")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/attention"
    after = admin.http.get("/console/attention").text
    assert f"Campaign {flagged} of acme recorded as sg-1234 in the service." in after
    assert f'href="/console/attention/acme/{flagged}"' not in after
    assert world.row(flagged) == ("done", "Sending", "sg-1234", None)
    [entry] = [e for e in world.host.audit.list(limit=20) if flagged in e.action]
    assert entry.actor == "admin token configured"
    assert (
        entry.action == f"resolved campaign {flagged} of acme: recorded as sg-1234 in the service"
    )


def test_marking_it_not_created_lets_the_host_create_it_again(
    world: World, admin: ConsoleVisitor
) -> None:
    flagged = world.campaign("Summer sale")
    answer = _resolve(admin, flagged, resolution="not-created")
    assert answer.status_code == 303
    assert world.row(flagged) == ("preparing", "Draft", None, None)
    assert "marked not created in the service" in admin.http.get("/console/attention").text


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"resolution": "exists", "externalId": ""},
         'give either &#34;externalId&#34; or &#34;notCreated&#34;: true'),
        ({"resolution": "exists", "externalId": "   "},
         'give either &#34;externalId&#34; or &#34;notCreated&#34;: true'),
        ({"resolution": "exists", "externalId": "x" * 256}, "must be at most 255 characters"),
        ({"resolution": "maybe"}, "must be &#39;exists&#39; or &#39;not-created&#39;"),
    ],
)  # fmt: skip
def test_a_bad_answer_is_refused_at_its_field_and_changes_nothing(
    world: World, admin: ConsoleVisitor, form: dict[str, str], message: str
) -> None:
    flagged = world.campaign("Autumn sale")
    before = table_dump(world.host)["campaigns"]
    answer = _resolve(admin, flagged, **form)
    assert answer.status_code == 422, answer.text
    assert message in answer.text
    assert 'aria-invalid="true"' in answer.text or "resolution: " in answer.text
    assert table_dump(world.host)["campaigns"] == before
    assert flagged in admin.http.get("/console/attention").text


def test_a_campaign_not_flagged_or_already_resolved_is_a_clear_409(
    world: World, admin: ConsoleVisitor
) -> None:
    calm = world.campaign("Never flagged", flagged=False)
    before = table_dump(world.host)["campaigns"]
    answer = _resolve(admin, calm, resolution="exists", externalId="sg-77")
    assert answer.status_code == 409
    assert f"campaign {calm} does not need attention" in answer.text
    assert "This campaign does not need attention" in answer.text
    assert table_dump(world.host)["campaigns"] == before

    flagged = world.campaign("Answered twice")
    assert _resolve(admin, flagged, resolution="not-created").status_code == 303
    again = _resolve(admin, flagged, resolution="exists", externalId="sg-78")
    assert again.status_code == 409 and "does not need attention" in again.text
    assert world.row(flagged) == ("preparing", "Draft", None, None)


def test_another_campaigns_service_id_is_refused(world: World, admin: ConsoleVisitor) -> None:
    first, second = world.campaign("First"), world.campaign("Second")
    assert _resolve(admin, first, resolution="exists", externalId="sg-shared").status_code == 303
    answer = _resolve(admin, second, resolution="exists", externalId="sg-shared")
    assert answer.status_code == 409
    assert f"campaign {first} already has externalId sg-shared" in answer.text
    assert world.row(second)[2:] == (None, REASON)


def test_an_unknown_campaign_or_tenant_is_a_404_page(world: World, admin: ConsoleVisitor) -> None:
    flagged = world.campaign("Lost")
    for path in (f"acme/{'0' * 32}", f"no-such-tenant/{flagged}", f"globex/{flagged}"):
        assert admin.http.get(f"/console/attention/{path}").status_code == 404, path
        tenant_id, campaign_id = path.split("/")
        answer = _resolve(admin, campaign_id, tenant_id, resolution="not-created")
        assert answer.status_code == 404, path
    assert world.row(flagged)[3] == REASON


def test_a_marketer_sees_the_flag_read_only_and_cannot_resolve(
    world: World, admin: ConsoleVisitor
) -> None:
    flagged = world.campaign("Winter sale")
    marketer = signed_in_user(world.app, world.marketer)
    page = marketer.http.get(f"/console/tenants/acme/campaigns/{flagged}")
    assert page.status_code == 200
    assert "Needs attention since" in page.text and REASON in page.text
    assert "An admin looks it up in the service" in page.text
    assert "/console/attention" not in page.text  # no link they could not follow
    listed = marketer.http.get("/console/tenants/acme/campaigns").text
    row = listed[listed.index(f"/campaigns/{flagged}") :].split("</tr>")[0]
    assert "Needs attention since 2026-11-30 09:15 UTC: an admin resolves it" in row
    own_admin_view = admin.http.get(f"/console/tenants/acme/campaigns/{flagged}").text
    assert f'href="/console/attention/acme/{flagged}"' in own_admin_view

    integrator = signed_in_user(world.app, world.integrator)
    before = table_dump(world.host)["campaigns"]
    for visitor in (marketer, integrator):
        assert visitor.http.get("/console/attention").status_code == 403
        answer = _resolve(visitor, flagged, resolution="exists", externalId="sg-9")
        assert answer.status_code == 403
    assert table_dump(world.host)["campaigns"] == before


def test_a_resolution_without_its_csrf_token_is_refused(
    world: World, admin: ConsoleVisitor
) -> None:
    flagged = world.campaign("Forged")
    before = table_dump(world.host)["campaigns"]
    for token in ({}, {"csrf_token": "forged"}):
        answer = admin.post(
            f"/console/attention/acme/{flagged}/resolve", {"resolution": "not-created", **token}
        )
        assert answer.status_code == 403 and "security token (CSRF)" in answer.text
    assert table_dump(world.host)["campaigns"] == before
