"""Mailchimp (Marketing API v3) for crm-module-host.

What each function does at Mailchimp (https://mailchimp.com/developer/marketing/api/):

* ImportTemplates  GET /3.0/templates?type=user&offset&count (Mailchimp pages by offset and
                   count too); the template object has no HTML
* GetTemplateHTML  not implemented: Mailchimp has no call that returns a template's HTML
* SetTemplateHTML  POST /3.0/templates {name, html}, or PATCH /3.0/templates/{id}
* ExportContacts   PUT /3.0/lists/{list}/members/{md5 of the lower-cased email} per contact
                   (status_if_new only, so a member's own unsubscribe is never undone); a
                   chunk too big for one call's fetch budget goes through the batch call
                   POST /3.0/lists/{list} (500 per call, update_existing false)
* PrepareCampaign  one static segment (Mailchimp shows it as a tag) per CRM campaign; each
                   batch of emails is added with POST …/segments/{id} (500 per call)
* CreateCampaign   POST /3.0/campaigns (regular, the audience + the segment), PUT …/content
                   (html or the template), then POST …/actions/send, or …/actions/schedule
                   on the next quarter hour at or after scheduledAt
* GetCampaignStats GET /3.0/reports/{id}
* ParseWebhookRequest  the audience webhooks (below)

Audience webhooks → CRM actions (form-encoded ``type`` + ``data[...]``; Mailchimp signs
nothing, so the URL carries ``?secret=<webhook_secret>``, compared in constant time):

    subscribe     UpdateContact (created or renamed) + Resubscribe from all (the host
                  lifts Bounced/Complained too, per the tenant's suppression policy)
    unsubscribe   Unsubscribe from all; delivery Unsubscribed for data[campaign_id];
                  reason=abuse: delivery Complained instead
    cleaned       delivery Bounced for data[campaign_id] (reason=abuse: Complained)
    profile       UpdateContact (name from FNAME/LNAME); never a subscription change
    upemail       UpdateContact old_email → new_email
    campaign      UpdateCampaign: sent → Sent, canceled → Cancelled (reason as the error)

A GET (Mailchimp's validation of a new webhook URL) with the secret is answered 200.
"""

import base64
import datetime
import hashlib
import json
import urllib.parse

import signatures

PAGE_MAX = 1000  # count: at most 1000 per Mailchimp page
BATCH_MAX = 500  # members per batch-subscribe call, emails per segment update
PUT_BUDGET = 40  # single upserts per call; the manifest's fetch limit is 50
SECRET_PARAM = "secret"

Delivery = CRM_Marketing_DeliveryStatus
CAMPAIGN_STATUS = {
    "sent": CRM_Marketing_CampaignStatus.Sent,
    "sending": CRM_Marketing_CampaignStatus.Sending,
    "canceled": CRM_Marketing_CampaignStatus.Cancelled,
    "cancelled": CRM_Marketing_CampaignStatus.Cancelled,
    "paused": CRM_Marketing_CampaignStatus.Paused,
    "schedule": CRM_Marketing_CampaignStatus.Scheduled,
}


# --- talking to the API ----------------------------------------------------------------------


def data_center():
    key = settings["api_key"]
    return key.rsplit("-", 1)[1] if "-" in key else "us1"


def api_url(path, query=None):
    base = settings.get("api_base_url") or f"https://{data_center()}.api.mailchimp.com"
    url = base.rstrip("/") + "/3.0" + path
    if query:
        url = f"{url}?{urllib.parse.urlencode(query)}"
    return url


def call(method, path, payload=None, query=None):
    """One API call that must succeed; returns the JSON body (None for 204)."""
    token = base64.b64encode(f"crm-host:{settings['api_key']}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
    if payload is None:
        response = fetch(api_url(path, query), method=method, headers=headers)
    else:
        response = fetch(api_url(path, query), method=method, headers=headers, json=payload)
    if not response.ok:
        raise RuntimeError(f"Mailchimp {method} {path}: HTTP {response.status}: {problem_of(response)}")
    text = response.text()
    return json.loads(text) if text.strip() else None


def problem_of(response):
    """Mailchimp's problem+json {title, detail, errors[]} as one line."""
    try:
        body = response.json()
    except ValueError:
        return response.text()[:300]
    if not isinstance(body, dict):
        return response.text()[:300]
    parts = [str(body.get("title") or ""), str(body.get("detail") or "")]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            parts.append(f"{error.get('field')}: {error.get('message')}")
    return " - ".join(p for p in parts if p)


def quoted(value):
    return urllib.parse.quote(str(value).strip(), safe="")


def list_path(suffix=""):
    return f"/lists/{quoted(settings['list_id'])}{suffix}"


def subscriber_hash(email):
    """Mailchimp's member id: the MD5 of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


# --- templates ---------------------------------------------------------------------------------


def CRM_Marketing_ImportTemplates(offset, limit):
    """The account's own (``user``) templates, ``limit`` from ``offset``."""
    found = []
    while len(found) < limit:
        count = min(limit - len(found), PAGE_MAX)
        page = call("GET", "/templates", query={
            "type": "user", "offset": offset + len(found), "count": count,
            "fields": "templates.id,templates.name,total_items",
        })
        items = page.get("templates") or []
        for template in items:
            found.append({"externalId": str(template["id"]),
                          "name": template.get("name") or str(template["id"])})
        if len(items) < count:
            break
    return found


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError("Mailchimp's API returns no HTML for a template")


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    name = (name or "CRM template")[:100]
    if templateExternalId:
        template = call("PATCH", f"/templates/{quoted(templateExternalId)}",
                        {"name": name, "html": html})
    else:
        template = call("POST", "/templates", {"name": name, "html": html})
    return str(template["id"])


# --- contacts and campaigns ------------------------------------------------------------------


def merge_fields(name):
    parts = (name or "").strip().split(None, 1)
    return {"FNAME": parts[0] if parts else "", "LNAME": parts[1] if len(parts) > 1 else ""}


def CRM_Marketing_ExportContacts(contactIds):
    """Upsert the CRM contacts as audience members; a new member is subscribed unless the
    CRM says it must not be mailed. An existing member's status is never changed."""
    members = []
    for contact in crm.contacts(list(contactIds)):
        email = (contact.get("email") or "").strip()
        if email:
            mailable = contact.get("status") in ("Subscribed", "Pending", None)
            members.append({"email_address": email, "merge_fields": merge_fields(contact.get("name")),
                            "status_if_new": "subscribed" if mailable else "unsubscribed"})
    if len(members) <= PUT_BUDGET:
        for member in members:
            call("PUT", list_path(f"/members/{subscriber_hash(member['email_address'])}"), member)
        return
    for start in range(0, len(members), BATCH_MAX):
        chunk = [{"email_address": m["email_address"], "merge_fields": m["merge_fields"],
                  "status": m["status_if_new"]} for m in members[start:start + BATCH_MAX]]
        result = call("POST", list_path(), {"members": chunk, "update_existing": False})
        log(f"batch subscribe: {result.get('total_created')} new, "
            f"{result.get('error_count')} not added (existing members are kept as they are)")


def campaign_key(campaign_id):
    return f"campaign:{campaign_id}"


def segment_name(campaign_id):
    return f"CRM campaign {campaign_id}"[:100]


def find_segment(name):
    """The id of the list's static segment called ``name``, or None."""
    offset = 0
    while True:
        page = call("GET", list_path("/segments"),
                    query={"type": "static", "count": 1000, "offset": offset})
        segments = page.get("segments") or []
        for segment in segments:
            if segment.get("name") == name:
                return segment["id"]
        offset += len(segments)
        if not segments or offset >= (page.get("total_items") or 0):
            return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    """Add one batch of recipient emails to the campaign's static segment. Idempotent, as the
    contract asks (a batch may come again after a crash): a segment is a set of members, and
    the segment an earlier call created is found by its name rather than made twice."""
    if type != CRM_Marketing_CampaignType.Email:
        raise ValueError(f"Mailchimp campaigns send email, not {type}")
    state = storage.get(campaign_key(campaignId)) or {}
    emails, seen = [], set()
    for email in contacts:
        email = (email or "").strip()
        if email and email.lower() not in seen:
            seen.add(email.lower())
            emails.append(email)
    if not state.get("segmentId"):
        existing = find_segment(segment_name(campaignId))
        if existing is not None:
            state["segmentId"] = existing
        else:
            segment = call("POST", list_path("/segments"), {
                "name": segment_name(campaignId), "static_segment": emails[:BATCH_MAX]})
            state["segmentId"] = segment["id"]
            emails = emails[BATCH_MAX:]
        storage.set(campaign_key(campaignId), state)
    for start in range(0, len(emails), BATCH_MAX):
        result = call("POST", list_path(f"/segments/{quoted(state['segmentId'])}"),
                      {"members_to_add": emails[start:start + BATCH_MAX]})
        if result.get("error_count"):
            log(f"{result['error_count']} addresses are not audience members: {result.get('errors')}")


def quarter_hour(scheduled_at):
    """Mailchimp schedules on :00/:15/:30/:45 only: the first one at or after the time asked
    (None when that is less than 15 minutes away: send now)."""
    wanted = datetime.datetime.fromisoformat(str(scheduled_at).replace("Z", "+00:00"))
    if wanted.tzinfo is None:
        wanted = wanted.replace(tzinfo=datetime.timezone.utc)
    wanted = wanted.astimezone(datetime.timezone.utc)
    rounded = wanted.replace(second=0, microsecond=0)
    if rounded < wanted or rounded.minute % 15:
        rounded += datetime.timedelta(minutes=15 - rounded.minute % 15)
    now = datetime.datetime.now(datetime.timezone.utc)
    if rounded < now + datetime.timedelta(minutes=15):
        return None
    return rounded.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def find_campaign(segment_id):
    """The campaign an earlier call made for the segment (the segment is the CRM campaign's
    own), or None."""
    offset = 0
    while True:
        page = call("GET", "/campaigns",
                    query={"list_id": settings["list_id"], "count": 1000, "offset": offset})
        campaigns = page.get("campaigns") or []
        for campaign in campaigns:
            options = (campaign.get("recipients") or {}).get("segment_opts") or {}
            if str(options.get("saved_segment_id")) == str(segment_id):
                return campaign
        offset += len(campaigns)
        if not campaigns or offset >= (page.get("total_items") or 0):
            return None


SENT_STATUS = {"schedule": CRM_Marketing_CampaignStatus.Scheduled,
               "sending": CRM_Marketing_CampaignStatus.Sending,
               "sent": CRM_Marketing_CampaignStatus.Sent}


def CRM_Marketing_CreateCampaign(request):
    """A regular campaign to the campaign's segment; its id is the externalId.

    Idempotent per campaignId (the manifest declares it): the id is stored durably right
    after the create call, and a repeated call that has no id finds the campaign by its
    segment; one already sent or scheduled is returned, one still a draft is sent."""
    if request.type != CRM_Marketing_CampaignType.Email:
        raise ValueError(f"Mailchimp campaigns send email, not {request.type}")
    key = campaign_key(request.campaignId)
    state = storage.get(key) or {}
    if not state.get("segmentId"):
        raise ValueError(f"campaign {request.campaignId} has no prepared recipients")
    if state.get("status"):
        return {"externalId": state["mailchimpId"], "status": state["status"]}
    existing = None
    if state.get("mailchimpId"):
        existing = call("GET", f"/campaigns/{quoted(state['mailchimpId'])}")
    else:
        existing = find_campaign(state["segmentId"])
    if existing is not None:
        state["mailchimpId"] = existing["id"]
        if existing.get("status") in SENT_STATUS:
            state["status"] = SENT_STATUS[existing["status"]]
            storage.set(key, state)
            return {"externalId": existing["id"], "status": state["status"]}
    if not state.get("mailchimpId"):
        if not request.html and not request.templateExternalId:
            raise ValueError("the campaign has neither html nor a template")
        created = call("POST", "/campaigns", {
            "type": "regular",
            "recipients": {"list_id": settings["list_id"],
                           "segment_opts": {"saved_segment_id": int(state["segmentId"])}},
            "settings": {"subject_line": request.subject[:150], "title": request.name[:100],
                         "from_name": request.senderName, "reply_to": request.senderEmail},
        })
        state["mailchimpId"] = created["id"]
        storage.set(key, state, durable=True)  # kept even if this call dies from here on
    campaign_id = quoted(state["mailchimpId"])
    if request.html:
        content = {"html": request.html}
    else:
        content = {"template": {"id": int(request.templateExternalId)}}
    call("PUT", f"/campaigns/{campaign_id}/content", content)
    when = quarter_hour(request.scheduledAt) if request.scheduledAt else None
    if when:
        call("POST", f"/campaigns/{campaign_id}/actions/schedule",
             {"schedule_time": when, "timewarp": False})
        status = CRM_Marketing_CampaignStatus.Scheduled
    else:
        call("POST", f"/campaigns/{campaign_id}/actions/send")
        status = CRM_Marketing_CampaignStatus.Sending
    state["status"] = status
    storage.set(key, state)
    return {"externalId": state["mailchimpId"], "status": status}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    """The campaign report; opened/clicked count recipients (unique), not events."""
    report = call("GET", f"/reports/{quoted(campaignExternalId)}")
    sent = report.get("emails_sent") or 0
    bounces = report.get("bounces") or {}
    bounced = (bounces.get("hard_bounces") or 0) + (bounces.get("soft_bounces") or 0)
    failed = bounces.get("syntax_errors") or 0
    return {
        "total": sent + failed,
        "sent": sent,
        "delivered": max(sent - bounced, 0),
        "opened": (report.get("opens") or {}).get("unique_opens") or 0,
        "clicked": (report.get("clicks") or {}).get("unique_subscriber_clicks") or 0,
        "bounced": bounced,
        "unsubscribed": report.get("unsubscribed") or 0,
        "complained": report.get("abuse_reports") or 0,
        "failed": failed,
    }


# --- the audience webhooks -------------------------------------------------------------------


def answer(status, body, actions=None):
    return {"actions": actions or [], "response": {"status": status, "body": body}}


def secret_problem(request):
    """Why the request does not prove it comes from Mailchimp, or None."""
    given = request.query.get(SECRET_PARAM)
    if not given:
        return answer(401, {"error": f"the {SECRET_PARAM} query parameter is missing"})
    if isinstance(given, list) or not signatures.equals(given, settings["webhook_secret"]):
        return answer(403, {"error": "wrong secret"})
    return None


def full_name(fields):
    first = (fields.get("data[merges][FNAME]") or "").strip()
    last = (fields.get("data[merges][LNAME]") or "").strip()
    return " ".join(p for p in (first, last) if p) or None


def contact_update(email, fields):
    action = {"type": "UpdateContact", "email": email}
    name = full_name(fields)
    if name is not None:
        action["name"] = name
    return action


def delivery(email, campaign, status):
    if not campaign:
        return []
    return [{"type": "UpdateDeliveryStatus", "email": email, "externalId": campaign,
             "status": status}]


def actions_for(kind, fields):
    email = (fields.get("data[email]") or "").strip()
    campaign = (fields.get("data[campaign_id]") or "").strip()
    abuse = (fields.get("data[reason]") or "").strip() == "abuse"
    if kind == "campaign":
        status = CAMPAIGN_STATUS.get((fields.get("data[status]") or "").strip())
        external = (fields.get("data[id]") or "").strip()
        if status is None or not external:
            return []
        action = {"type": "UpdateCampaign", "externalId": external, "status": status}
        reason = (fields.get("data[reason]") or "").strip()
        if reason:
            action["error"] = reason
        return [action]
    if kind == "upemail":
        old = (fields.get("data[old_email]") or "").strip()
        new = (fields.get("data[new_email]") or "").strip()
        return [{"type": "UpdateContact", "email": old, "newEmail": new}] if old and new else []
    if not email:
        return []
    if kind == "subscribe":
        return [contact_update(email, fields),
                {"type": "Resubscribe", "email": email, "externalId": {"all": True}}]
    if kind == "profile":
        return [contact_update(email, fields)]
    if kind == "unsubscribe":
        status = Delivery.Complained if abuse else Delivery.Unsubscribed
        unsubscribe = {"type": "Unsubscribe", "email": email, "externalId": {"all": True}}
        return [unsubscribe] + delivery(email, campaign, status)
    if kind == "cleaned":
        return delivery(email, campaign, Delivery.Complained if abuse else Delivery.Bounced)
    return None


def CRM_Marketing_ParseWebhookRequest(request):
    problem = secret_problem(request)
    if problem is not None:
        return problem
    if request.method in ("GET", "HEAD"):
        return answer(200, "OK")  # Mailchimp validates a new webhook URL with a GET
    if request.method != "POST":
        return {"actions": [], "response": {"status": 405, "headers": {"Allow": "GET, POST"},
                                            "body": {"error": "GET or POST only"}}}
    fields = {}
    for name, value in urllib.parse.parse_qsl(request.body, keep_blank_values=True):
        fields[name] = value
    kind = (fields.get("type") or "").strip()
    if not kind:
        return answer(400, {"error": "the body has no type (a form-encoded Mailchimp webhook)"})
    list_id = (fields.get("data[list_id]") or "").strip()
    if list_id and list_id != settings["list_id"]:
        log(f"{kind} for audience {list_id} ignored (this tenant's audience is {settings['list_id']})")
        return answer(200, {"received": kind, "ignored": "another audience"})
    actions = actions_for(kind, fields)
    if actions is None:
        log(f"webhook type {kind} has no CRM action")
        actions = []
    return answer(200, {"received": kind}, actions)
