"""SendGrid (Twilio SendGrid v3, Marketing Campaigns) for crm-module-host.

What each function does at SendGrid (API reference: https://www.twilio.com/docs/sendgrid):

* ImportTemplates  GET /v3/templates?generations=dynamic (token pages mapped onto the host's
                   offset/limit; the next page token is kept in storage between calls)
* GetTemplateHTML  GET /v3/templates/{id} → the active version's html_content
* SetTemplateHTML  new dynamic template + active version, or edit the active version
* ExportContacts   PUT /v3/marketing/contacts (asynchronous upsert, 202 + job_id)
* PrepareCampaign  one list per CRM campaign; each batch of emails is added to it
* CreateCampaign   POST /v3/marketing/singlesends (code editor, the campaign's list), then
                   PUT …/schedule; the single send id is the campaign's externalId.
                   Idempotent per campaignId (declared in the manifest): a repeated call
                   finds the earlier single send (stored id, or search by its category)
* GetCampaignStats GET /v3/marketing/stats/singlesends/{id}?aggregated_by=total
* ParseWebhookRequest  the Event Webhook (below)

Event Webhook → CRM actions (a campaign is found by singlesend_id, the legacy
marketing_campaign_id, or the custom arg CAMPAIGN_ARG; events without one change no delivery):

    processed, deferred          delivery Sent (a deferral is retried by SendGrid: not a bounce)
    delivered                    delivery Delivered
    open                         delivery Opened (Apple MPP machine opens only prove Delivered)
    click                        delivery Clicked
    bounce type=bounce           delivery Bounced (hard)
    bounce type=blocked          delivery SoftBounced
    dropped                      delivery Failed (reason logged)
    spamreport                   delivery Complained + unsubscribe from everything
    unsubscribe                  delivery Unsubscribed + unsubscribe from everything
    group_unsubscribe            delivery Unsubscribed + unsubscribe from category asm_group_id
    group_resubscribe            Resubscribe to category asm_group_id (host extension)
    account_status_change, others   logged, no action

Each event's actions carry its sg_event_id as eventId (the docs' placeholder ids excepted),
so a batch SendGrid retries — it retries for up to 72 hours after a failure or a timeout —
applies none of the events the host already applied.

A single send is triggered all at once, so the first delivery event of a singlesend_id also
moves its campaign to Sent (UpdateCampaign, once per batch): SendGrid posts no campaign-status
event, and without this a campaign would show Sending forever.

With the setting webhook_public_key, every request must carry a valid signature (ECDSA P-256
over the timestamp header + the raw body); otherwise it is answered 401/403 with no actions.
"""

import datetime
import json
import time
import urllib.parse

import signatures

DEFAULT_API = "https://api.sendgrid.com"
TEMPLATE_PAGE_MAX = 200  # GET /v3/templates: page_size 1..200 (required)
CONTACTS_PER_CALL = 30000  # PUT /v3/marketing/contacts limit
TEMPLATE_CURSOR = "templates:cursor"
CAMPAIGN_ARG = "crm_campaign_external_id"  # custom arg a Mail Send integration may set
JOBS_KEPT = 20  # import jobs remembered (and checked) per campaign
IMPORT_GRACE_MINUTES = 10  # delay a send while its contacts are still being imported
RATE_LIMIT_SLEEP_MAX = 2  # seconds of a 429's reset worth sleeping inside one call
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
PLACEHOLDER_EVENT_IDS = ("sg_event_id", "sendgrid_internal_event_id")  # docs samples
UNSUBSCRIBE_TAGS = ("{{{unsubscribe}}}", "{{{unsubscribe_preferences}}}")

Status = CRM_Marketing_DeliveryStatus
DELIVERY_STATUS = {
    "processed": Status.Sent,
    "deferred": Status.Sent,
    "delivered": Status.Delivered,
    "open": Status.Opened,
    "click": Status.Clicked,
    "dropped": Status.Failed,
    "spamreport": Status.Complained,
    "unsubscribe": Status.Unsubscribed,
    "group_unsubscribe": Status.Unsubscribed,
}


# --- talking to the API ----------------------------------------------------------------------


def api_url(path, query=None):
    base = (settings.get("api_base_url") or DEFAULT_API).rstrip("/")
    if query:
        path = f"{path}?{urllib.parse.urlencode(query)}"
    return base + path


def request_api(method, path, payload=None, query=None):
    """One API call. A 429 whose X-RateLimit-Reset is at most RATE_LIMIT_SLEEP_MAX seconds
    away is retried once after it; a longer one is returned as it is, so the call fails at
    once: the host then waits for the reset without holding a sandbox slot (a campaign
    batch is called again after it). Returns the FetchResponse."""
    headers = {"Authorization": f"Bearer {settings['api_key']}", "Accept": "application/json"}
    for attempt in (1, 2):
        if payload is None:
            response = fetch(api_url(path, query), method=method, headers=headers)
        else:
            response = fetch(api_url(path, query), method=method, headers=headers, json=payload)
        wait = reset_in(response)
        if response.status != 429 or attempt == 2 or wait is None or wait > RATE_LIMIT_SLEEP_MAX:
            return response
        time.sleep(max(wait, 0.1))
    return response


def reset_in(response):
    """Seconds until SendGrid's rate-limit window resets (X-RateLimit-Reset is an epoch
    time), or None when the response does not say."""
    reset = response.headers.get("x-ratelimit-reset") or ""
    if not reset.isdigit():
        return None
    return int(reset) - time.time()


def call(method, path, payload=None, query=None):
    """An API call that must succeed (2xx); returns the JSON body (None when empty)."""
    response = request_api(method, path, payload, query)
    if not response.ok:
        problem = errors_of(response)
        raise RuntimeError(f"SendGrid {method} {path}: HTTP {response.status}: {problem}")
    text = response.text()
    return json.loads(text) if text.strip() else None


def errors_of(response):
    """SendGrid's error envelope {"errors": [{"field", "message"}]} as one line."""
    try:
        body = response.json()
    except ValueError:
        return response.text()[:300]
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return response.text()[:300]
    parts = []
    for error in errors:
        if isinstance(error, dict):
            field = error.get("field")
            parts.append(f"{field}: {error.get('message')}" if field else str(error.get("message")))
    return "; ".join(parts)


def quoted(value):
    return urllib.parse.quote(str(value).strip(), safe="")


def next_page_token(page):
    """The page_token of ``_metadata.next`` (rebuilt on our base URL, never followed as is)."""
    link = (page.get("_metadata") or {}).get("next")
    if not link:
        return ""
    tokens = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query).get("page_token")
    return tokens[0] if tokens else ""


# --- templates ---------------------------------------------------------------------------------


def active_version(template):
    for version in template.get("versions") or []:
        if str(version.get("active")) in ("1", "True", "true"):
            return version
    return None


def CRM_Marketing_ImportTemplates(offset, limit):
    """Dynamic templates, ``limit`` from ``offset``. SendGrid pages by token, so the token that
    continues where this call stops is kept in storage; a call at another offset walks from
    the start. The list omits html_content, so html comes on preview (GetTemplateHTML)."""
    size = max(1, min(limit, TEMPLATE_PAGE_MAX))
    cursor = storage.get(TEMPLATE_CURSOR) if offset > 0 else None
    if cursor and cursor.get("offset") == offset and cursor.get("size") == size:
        if cursor.get("done"):
            return []
        token, position = cursor["token"], offset
    else:
        token, position = "", 0
    found = []
    while len(found) < limit:
        query = {"generations": "dynamic", "page_size": size}
        if token:
            query["page_token"] = token
        page = call("GET", "/v3/templates", query=query)
        items = page.get("result") or []
        for template in items:
            if position >= offset and len(found) < limit:
                version = active_version(template) or {}
                found.append({
                    "externalId": template["id"],
                    "name": template.get("name") or template["id"],
                    "subject": version.get("subject"),
                    "html": version.get("html_content"),
                })
            position += 1
        token = next_page_token(page)
        if not token or not items:
            break
    if position == offset + len(found):  # stopped on a page boundary: resumable
        storage.set(TEMPLATE_CURSOR, {"offset": position, "size": size, "token": token,
                                      "done": not token})
    else:
        storage.delete(TEMPLATE_CURSOR)
    return found


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    template_id = quoted(templateExternalId)
    template = call("GET", f"/v3/templates/{template_id}")
    version = active_version(template)
    if version is None:
        raise ValueError(f"template {templateExternalId} has no active version")
    html = version.get("html_content")
    if html is None:  # not every response embeds the content: read the version itself
        html = call("GET", f"/v3/templates/{template_id}/versions/{quoted(version['id'])}").get(
            "html_content")
    return html or ""


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    """Publish: a new dynamic template, or new HTML in the existing one's active version (edited
    in place: SendGrid caps versions per account). Returns the template id."""
    name = (name or "CRM template")[:100]
    if templateExternalId:
        template_id = quoted(templateExternalId)
        template = call("GET", f"/v3/templates/{template_id}")
        if template.get("name") != name:
            call("PATCH", f"/v3/templates/{template_id}", {"name": name})
        version = active_version(template)
        if version is not None:
            call("PATCH", f"/v3/templates/{template_id}/versions/{quoted(version['id'])}",
                 {"html_content": html})
            return template["id"]
    else:
        template = call("POST", "/v3/templates", {"name": name, "generation": "dynamic"})
        template_id = quoted(template["id"])
    call("POST", f"/v3/templates/{template_id}/versions", {
        "name": name, "subject": name, "html_content": html, "active": 1, "editor": "code",
        "generate_plain_content": True,
    })
    return template["id"]


# --- contacts and campaigns ------------------------------------------------------------------


def split_name(name):
    parts = (name or "").strip().split(None, 1)
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


def CRM_Marketing_ExportContacts(contactIds):
    """Upsert the CRM contacts (email, first/last name) as SendGrid Marketing contacts."""
    id_field = settings.get("contact_id_field")
    contacts = []
    for contact in crm.contacts(list(contactIds)):
        email = (contact.get("email") or "").strip()
        if not email:
            continue  # SendGrid needs an identifier; these contacts cannot be mailed anyway
        first, last = split_name(contact.get("name"))
        item = {"email": email, "first_name": first, "last_name": last}
        if id_field:
            item["custom_fields"] = {id_field: contact["id"]}
        contacts.append(item)
    for start in range(0, len(contacts), CONTACTS_PER_CALL):
        job = call("PUT", "/v3/marketing/contacts",
                   {"contacts": contacts[start:start + CONTACTS_PER_CALL]})
        log(f"contacts upsert job {job.get('job_id')}: {len(contacts)} contacts")


def campaign_key(campaign_id):
    return f"campaign:{campaign_id}"


def find_list(name):
    query = {"page_size": 1000}
    while True:
        page = call("GET", "/v3/marketing/lists", query=query)
        for item in page.get("result") or []:
            if item.get("name") == name:
                return item["id"]
        token = next_page_token(page)
        if not token:
            return None
        query["page_token"] = token


def campaign_list(campaign_id):
    """The id of the campaign's list, created on first use (found by name after a retry)."""
    name = f"CRM campaign {campaign_id}"[:100]
    response = request_api("POST", "/v3/marketing/lists", {"name": name})
    if response.ok:
        return response.json()["id"]
    existing = find_list(name)
    if existing is None:
        raise RuntimeError(f"SendGrid could not create list {name!r}: {errors_of(response)}")
    return existing


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    """Add one batch of recipient emails to the campaign's own list. Idempotent, as the
    contract asks (a batch may come again after a crash): the list is found by its name if
    it exists, and PUT /v3/marketing/contacts is an upsert by email, so a contact is in the
    list once however often it is added."""
    if type != CRM_Marketing_CampaignType.Email:
        raise ValueError(f"SendGrid Marketing Campaigns send email, not {type}")
    state = storage.get(campaign_key(campaignId)) or {"jobs": []}
    if not state.get("listId"):
        state["listId"] = campaign_list(campaignId)
    emails, seen = [], set()
    for email in contacts:
        email = (email or "").strip()
        if email and email.lower() not in seen:
            seen.add(email.lower())
            emails.append(email)
    if emails:
        job = call("PUT", "/v3/marketing/contacts",
                   {"list_ids": [state["listId"]], "contacts": [{"email": e} for e in emails]})
        state["jobs"] = (state["jobs"] + [job["job_id"]])[-JOBS_KEPT:]
    storage.set(campaign_key(campaignId), state)


def utc_text(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pending_imports(state):
    """How many of the campaign's contact imports SendGrid is still running; a failed one
    stops the send (its recipients would silently be missing)."""
    pending = 0
    for job_id in state.get("jobs") or []:
        job = call("GET", f"/v3/marketing/contacts/imports/{quoted(job_id)}")
        status = job.get("status")
        if status == "pending":
            pending += 1
        elif status == "failed":
            raise RuntimeError(f"SendGrid contact import {job_id} failed")
        elif status == "errored":
            log(f"contact import {job_id}: some contacts were rejected: {job.get('results')}")
    return pending


def send_time(scheduled_at, pending):
    """``send_at`` for the schedule call: "now", the requested time, or later while contacts
    are still being imported. Returns (send_at, is in the future)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    wanted = now
    if scheduled_at:
        wanted = datetime.datetime.fromisoformat(str(scheduled_at).replace("Z", "+00:00"))
        if wanted.tzinfo is None:
            wanted = wanted.replace(tzinfo=datetime.timezone.utc)
    if pending:
        wanted = max(wanted, now + datetime.timedelta(minutes=IMPORT_GRACE_MINUTES))
    if wanted <= now + datetime.timedelta(seconds=60):
        return "now", False
    return utc_text(wanted), True


def with_unsubscribe_link(html):
    if any(tag in html for tag in UNSUBSCRIBE_TAGS):
        return html
    footer = '<p style="font-size:12px"><a href="{{{unsubscribe}}}">Unsubscribe</a></p>'
    if "</body>" in html:
        return html.replace("</body>", footer + "</body>", 1)
    return html + footer


def campaign_category(campaign_id):
    """The category that names a CRM campaign's single send (how a repeated call finds it)."""
    return f"crm-campaign-{campaign_id}"[:255]


def find_single_send(campaign_id):
    """The single send an earlier call made for the campaign, or None: searched by its
    category, so a host that died during the create call (the single send exists, its id
    was never stored) does not create a second one."""
    query = {"page_size": 100}
    while True:
        page = call("POST", "/v3/marketing/singlesends/search",
                    {"categories": [campaign_category(campaign_id)]}, query=query)
        for item in page.get("result") or []:
            if campaign_category(campaign_id) in (item.get("categories") or []):
                return item
        token = next_page_token(page)
        if not token:
            return None
        query["page_token"] = token


def status_of(single):
    """The campaign status of a single send that is already scheduled or sent."""
    send_at = single.get("send_at")
    if single.get("status") == "scheduled" and send_at:
        moment = datetime.datetime.fromisoformat(str(send_at).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        if moment > datetime.datetime.now(datetime.timezone.utc):
            return CRM_Marketing_CampaignStatus.Scheduled
    return CRM_Marketing_CampaignStatus.Sending


def CRM_Marketing_CreateCampaign(request):
    """A single send to the campaign's list, scheduled; its id is the externalId.

    Idempotent per campaignId (the manifest declares it): a repeated call finds the single
    send of an earlier one — by the id it stored durably right after creating it, or by its
    category in the service — and only schedules it if it is still a draft."""
    if request.type != CRM_Marketing_CampaignType.Email:
        raise ValueError(f"SendGrid Marketing Campaigns send email, not {request.type}")
    key = campaign_key(request.campaignId)
    state = storage.get(key) or {}
    if state.get("singleSendId") and state.get("status"):  # created and scheduled before
        return {"externalId": state["singleSendId"], "status": state["status"]}
    if not state.get("listId"):
        raise ValueError(f"campaign {request.campaignId} has no prepared recipients")
    if state.get("singleSendId"):
        single = call("GET", f"/v3/marketing/singlesends/{quoted(state['singleSendId'])}")
    else:
        single = find_single_send(request.campaignId)
    if single is not None and single.get("status") != "draft":
        status = status_of(single)
        state.update(singleSendId=single["id"], status=status)
        storage.set(key, state)
        return {"externalId": single["id"], "status": status}
    if not settings.get("sender_id"):
        raise ValueError("settings.sender_id (a verified SendGrid sender) is required to send")
    html = request.html or ""
    if not html and request.templateExternalId:
        html = CRM_Marketing_GetTemplateHTML(request.templateExternalId)
    if not html:
        raise ValueError("the campaign has neither html nor a template")
    config = {"subject": request.subject, "html_content": with_unsubscribe_link(html),
              "generate_plain_content": True, "editor": "code",
              "sender_id": int(settings["sender_id"])}
    group = request.categoryExternalId or settings.get("suppression_group_id")
    if group:
        config["suppression_group_id"] = int(group)
    elif settings.get("custom_unsubscribe_url"):
        config["custom_unsubscribe_url"] = settings["custom_unsubscribe_url"]
    else:
        raise ValueError("set suppression_group_id or custom_unsubscribe_url in the settings")
    send_at, later = send_time(request.scheduledAt, pending_imports(state))
    if single is None:
        single = call("POST", "/v3/marketing/singlesends", {
            "name": (request.name or request.campaignId)[:100],
            "categories": [campaign_category(request.campaignId)],
            "send_to": {"list_ids": [state["listId"]]},
            "email_config": config,
        })
        state["singleSendId"] = single["id"]
        storage.set(key, state, durable=True)  # kept even if this call dies from here on
    response = request_api("PUT", f"/v3/marketing/singlesends/{quoted(single['id'])}/schedule",
                           {"send_at": send_at})
    if not response.ok:
        raise RuntimeError(f"single send {single['id']} was created but not scheduled: "
                           f"{errors_of(response)}")
    status = CRM_Marketing_CampaignStatus.Sending
    if later:
        status = CRM_Marketing_CampaignStatus.Scheduled
    state.update(singleSendId=single["id"], status=status)
    storage.set(key, state)
    return {"externalId": single["id"], "status": status}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    """Single send totals; opened/clicked count recipients (unique), not events."""
    page = call("GET", f"/v3/marketing/stats/singlesends/{quoted(campaignExternalId)}",
                query={"aggregated_by": "total"})
    totals = {}
    for result in page.get("results") or []:
        for name, value in (result.get("stats") or {}).items():
            totals[name] = totals.get(name, 0) + (value or 0)
    failed = sum(totals.get(k, 0) for k in (
        "bounce_drops", "spam_report_drops", "invalid_emails", "unsubscribe_drops"))
    requests = totals.get("requests", 0)
    return {
        "total": requests,
        "sent": max(requests - failed, 0),
        "delivered": totals.get("delivered", 0),
        "opened": totals.get("unique_opens", 0),
        "clicked": totals.get("unique_clicks", 0),
        "bounced": totals.get("bounces", 0),
        "unsubscribed": totals.get("unsubscribes", 0),
        "complained": totals.get("spam_reports", 0),
        "failed": failed,
    }


# --- the Event Webhook ---------------------------------------------------------------------------


def reject(status, message):
    return {"actions": [], "response": {"status": status, "body": {"error": message}}}


def signature_problem(request):
    """Why the request's signature is not acceptable, or None. Only checked when the tenant
    configured the public key (SendGrid: Mail Settings → Signed Event Webhook)."""
    public_key = (settings.get("webhook_public_key") or "").strip()
    if not public_key:
        return None
    signature = request.headers.get(SIGNATURE_HEADER, "")
    stamp = request.headers.get(TIMESTAMP_HEADER, "")
    if not signature or not stamp:
        return (401, "signature headers are missing")
    max_age = settings.get("webhook_max_age_seconds") or 0
    if max_age and (not stamp.isdigit() or abs(time.time() - int(stamp)) > max_age):
        return (403, "signature timestamp is outside the allowed window")
    # The signature covers the exact bytes sent: timestamp header + raw body.
    raw = request.body.encode(request.headers.get("x-crm-host-body-encoding", "utf-8"))
    if not signatures.verify_ecdsa_p256(public_key, signature, stamp.encode("utf-8") + raw):
        return (403, "invalid signature")
    return None


def text_of(value):
    return str(value).strip() if value is not None else ""


def event_time(event):
    """Unix seconds; some documented samples carry milliseconds."""
    try:
        stamp = float(event.get("timestamp") or 0)
    except (TypeError, ValueError):
        return 0
    return stamp / 1000 if stamp > 100000000000 else stamp


def actions_for(event):
    kind = text_of(event.get("event")).lower()
    email = text_of(event.get("email"))
    if not email:
        log(f"{kind or 'event'} without an email ignored ({event.get('type') or ''})")
        return []
    campaign = text_of(event.get("singlesend_id") or event.get("marketing_campaign_id")
                       or event.get(CAMPAIGN_ARG))
    status = DELIVERY_STATUS.get(kind)
    if kind == "bounce":
        blocked = text_of(event.get("type")).lower() == "blocked"
        status = Status.SoftBounced if blocked else Status.Bounced
    elif kind == "open" and event.get("sg_machine_open") is True:
        status = Status.Delivered
    actions = []
    if status is not None and campaign:
        actions.append({"type": "UpdateDeliveryStatus", "email": email, "externalId": campaign,
                        "status": status})
    if kind in ("unsubscribe", "spamreport"):
        actions.append({"type": "Unsubscribe", "email": email, "externalId": {"all": True}})
    elif kind == "group_unsubscribe" and text_of(event.get("asm_group_id")):
        actions.append({"type": "Unsubscribe", "email": email,
                        "externalId": text_of(event.get("asm_group_id"))})
    elif kind == "group_resubscribe" and text_of(event.get("asm_group_id")):
        # the recipient's explicit re-subscribe to one group: lifts that category only
        actions.append({"type": "Resubscribe", "email": email,
                        "externalId": text_of(event.get("asm_group_id"))})
    if status is None and not actions:
        log(f"{kind or 'event'} for {email}: no CRM action")
    elif kind in ("dropped", "bounce"):
        log(f"{kind} {email}: {text_of(event.get('reason'))}")
    return actions


def CRM_Marketing_ParseWebhookRequest(request):
    if request.method != "POST":
        return {"actions": [], "response": {"status": 405, "headers": {"Allow": "POST"},
                                            "body": {"error": "POST only"}}}
    problem = signature_problem(request)
    if problem is not None:
        return reject(problem[0], problem[1])
    try:
        payload = json.loads(request.body)
    except ValueError:
        return reject(400, "the body is not JSON")
    events = payload if isinstance(payload, list) else [payload]  # docs show bare objects too
    events = [e for e in events if isinstance(e, dict)]
    seen = set()
    actions = []
    triggered = []  # single sends this batch proves were sent
    for event in sorted(events, key=event_time):
        event_id = text_of(event.get("sg_event_id"))
        if event_id and event_id not in PLACEHOLDER_EVENT_IDS:
            key = f"{event_id}|{text_of(event.get('event'))}|{text_of(event.get('email'))}"
            if key in seen:
                continue  # SendGrid delivers at least once
            seen.add(key)
        event_actions = actions_for(event)
        if event_id and event_id not in PLACEHOLDER_EVENT_IDS:
            # the host applies an event id once: a retried batch changes nothing again
            event_actions = [{**action, "eventId": event_id[:255]} for action in event_actions]
        actions += event_actions
        single_send = text_of(event.get("singlesend_id"))
        kind = text_of(event.get("event")).lower()
        if single_send and (kind in DELIVERY_STATUS or kind == "bounce") \
                and text_of(event.get("email")) and single_send not in triggered:
            triggered.append(single_send)
    actions += [{"type": "UpdateCampaign", "externalId": single_send,
                 "status": CRM_Marketing_CampaignStatus.Sent} for single_send in triggered]
    return {"actions": actions, "response": {"status": 200, "body": {"received": len(events)}}}
