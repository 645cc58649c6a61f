"""Unisender (classic API) email module for crm-module-host.

API: https://api.unisender.com/<lang>/api/<method>, every call a form POST carrying
``format=json`` and ``api_key``; replies are ``{"result": ...}`` or
``{"error": "...", "code": "..."}`` (see README.md for the call map).

How a campaign travels:

1. ExportContacts  -> importContacts into the list of the ``list_id`` setting (500 rows/call).
2. PrepareCampaign -> the batch's e-mail addresses are kept in ``storage`` under
   ``recipients:<campaignId>`` (the CRM audience is usually a subset of the list).
3. CreateCampaign  -> createEmailMessage (HTML or a Unisender template) and createCampaign
   with ``contacts`` = those addresses, so only the CRM audience gets the letter.
4. Webhook         -> md5 ``auth`` checked, then email_status / campaign_status /
   unsubscribe events become CRM actions; an event without a campaign id is attributed
   through the host's map (``crm.campaign_for_key``: address -> CRM campaign -> externalId,
   recorded by PrepareCampaign and CreateCampaign), never to "the latest campaign".
"""

import hashlib
import json
import urllib.parse
from datetime import datetime, timezone

import signatures

DEFAULT_API = "https://api.unisender.com/ru/api"
IMPORT_ROWS = 500  # importContacts accepts at most 500 rows per call
TEMPLATES_PAGE = 100  # getTemplates returns at most 100 per call

# Classic email_status values (getCampaignDeliveryStats / webhooks) -> CRM delivery status.
# Values not listed (not_sent, unknown future ones) change nothing.
CLASSIC_STATUS = {
    "ok_sent": CRM_Marketing_DeliveryStatus.Sent,
    "ok_delivered": CRM_Marketing_DeliveryStatus.Delivered,
    "ok_spam_folder": CRM_Marketing_DeliveryStatus.Delivered,  # delivered, into the spam folder
    "ok_read": CRM_Marketing_DeliveryStatus.Opened,
    "ok_link_visited": CRM_Marketing_DeliveryStatus.Clicked,
    "ok_unsubscribed": CRM_Marketing_DeliveryStatus.Unsubscribed,
    "ok_fbl": CRM_Marketing_DeliveryStatus.Complained,  # feedback loop = spam complaint
    "err_unsubscribed": CRM_Marketing_DeliveryStatus.Unsubscribed,
    # permanent: the address does not exist / cannot receive mail
    "err_user_unknown": CRM_Marketing_DeliveryStatus.Bounced,
    "err_user_inactive": CRM_Marketing_DeliveryStatus.Bounced,
    "err_domain_inactive": CRM_Marketing_DeliveryStatus.Bounced,
    "err_dest_invalid": CRM_Marketing_DeliveryStatus.Bounced,
    "err_not_available": CRM_Marketing_DeliveryStatus.Bounced,
    # temporary: Unisender retries, or the mailbox may accept later
    "err_mailbox_full": CRM_Marketing_DeliveryStatus.SoftBounced,
    "err_will_retry": CRM_Marketing_DeliveryStatus.SoftBounced,
    "err_resend": CRM_Marketing_DeliveryStatus.SoftBounced,
    "err_spam_retry": CRM_Marketing_DeliveryStatus.SoftBounced,
    "err_spam_rejected": CRM_Marketing_DeliveryStatus.SoftBounced,
    "err_spam_folder": CRM_Marketing_DeliveryStatus.SoftBounced,
    # not sent for another reason
    "err_delivery_failed": CRM_Marketing_DeliveryStatus.Failed,
    "err_skip_letter": CRM_Marketing_DeliveryStatus.Failed,
    "err_src_invalid": CRM_Marketing_DeliveryStatus.Failed,
    "err_not_allowed": CRM_Marketing_DeliveryStatus.Failed,
    "err_lost": CRM_Marketing_DeliveryStatus.Failed,
    "err_internal": CRM_Marketing_DeliveryStatus.Failed,
}

# Unisender Go (transactional) posts the same envelope with these statuses; accepted too.
GO_STATUS = {
    "sent": CRM_Marketing_DeliveryStatus.Sent,
    "delivered": CRM_Marketing_DeliveryStatus.Delivered,
    "opened": CRM_Marketing_DeliveryStatus.Opened,
    "clicked": CRM_Marketing_DeliveryStatus.Clicked,
    "unsubscribed": CRM_Marketing_DeliveryStatus.Unsubscribed,
    "soft_bounced": CRM_Marketing_DeliveryStatus.SoftBounced,
    "hard_bounced": CRM_Marketing_DeliveryStatus.Bounced,
    "spam": CRM_Marketing_DeliveryStatus.Complained,
}

# Statuses after which the CRM must stop mailing the contact (Unsubscribe from all).
STOP_MAILING = ("Unsubscribed", "Complained")

CAMPAIGN_STATUS = {
    "waits_censor": CRM_Marketing_CampaignStatus.Scheduled,
    "censor_hold": CRM_Marketing_CampaignStatus.Scheduled,
    "waits_schedule": CRM_Marketing_CampaignStatus.Scheduled,
    "scheduled": CRM_Marketing_CampaignStatus.Scheduled,
    "in_progress": CRM_Marketing_CampaignStatus.Sending,
    "stopped": CRM_Marketing_CampaignStatus.Paused,
    "analysed": CRM_Marketing_CampaignStatus.Sent,
    "completed": CRM_Marketing_CampaignStatus.Sent,
    "declined": CRM_Marketing_CampaignStatus.Failed,
    "canceled": CRM_Marketing_CampaignStatus.Cancelled,
}


# --- the API ------------------------------------------------------------------------------


def call_api(method, params):
    """POST one API method; returns ``result`` or raises with Unisender's code and text."""
    base = (settings.get("api_base_url") or DEFAULT_API).rstrip("/")
    form = {"format": "json", "api_key": settings["api_key"]}
    form.update(params)
    response = fetch(
        f"{base}/{method}",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urllib.parse.urlencode(form),
    )
    if not response.ok:
        raise RuntimeError(f"Unisender {method}: HTTP {response.status} {response.statusText}")
    try:
        data = response.json()
    except ValueError:
        raise RuntimeError(f"Unisender {method}: the reply is not JSON")
    if not isinstance(data, dict):
        raise RuntimeError(f"Unisender {method}: unexpected reply")
    if data.get("error") or data.get("code"):
        raise RuntimeError(f"Unisender {method} failed: {data.get('code')}: {data.get('error')}")
    return data.get("result")


def as_template(item):
    # message_format "block" keeps its editor JSON in raw_body; body is always the HTML.
    return {
        "externalId": str(item["id"]),
        "name": item.get("title") or f"Template {item['id']}",
        "subject": item.get("subject") or None,
        "html": item.get("body") or None,
    }


# --- templates ----------------------------------------------------------------------------


def CRM_Marketing_ImportTemplates(offset, limit):
    """getTemplates(type=user), in pages of at most 100, until ``limit`` items or the end."""
    found = []
    while len(found) < limit:
        size = min(TEMPLATES_PAGE, limit - len(found))
        page = call_api(
            "getTemplates",
            {"type": "user", "offset": offset + len(found), "limit": size},
        ) or []
        found.extend(as_template(item) for item in page)
        if len(page) < size:
            break
    return found


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    template = call_api("getTemplate", {"template_id": templateExternalId}) or {}
    if not template.get("body"):
        raise ValueError(f"Unisender template {templateExternalId} has no HTML body")
    return template["body"]


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    """updateEmailTemplate when the template exists in Unisender, else createEmailTemplate."""
    fields = {"title": name, "body": html, "message_format": "raw_html"}
    if templateExternalId:
        fields["template_id"] = templateExternalId
        call_api("updateEmailTemplate", fields)
        return str(templateExternalId)
    result = call_api("createEmailTemplate", fields)
    return str(result["template_id"])


# --- contacts and campaigns ---------------------------------------------------------------


def CRM_Marketing_ExportContacts(contactIds):
    """importContacts into the configured list: email, Name, email_list_ids per row."""
    rows = [c for c in crm.contacts(list(contactIds)) if c.get("email")]
    list_id = str(settings["list_id"])
    for start in range(0, len(rows), IMPORT_ROWS):
        form = {
            "field_names[0]": "email",
            "field_names[1]": "Name",
            "field_names[2]": "email_list_ids",
        }
        for i, contact in enumerate(rows[start : start + IMPORT_ROWS]):
            form[f"data[{i}][0]"] = contact["email"]
            form[f"data[{i}][1]"] = contact.get("name") or ""
            form[f"data[{i}][2]"] = list_id
        result = call_api("importContacts", form) or {}
        for problem in result.get("log") or []:
            log(f"importContacts row {problem.get('index')}: {problem.get('message')}")
    return None


def address_key(email):
    """The attribution key of a recipient address (SHA-256 of the lower-cased address)."""
    return "to:" + hashlib.sha256(str(email).strip().lower().encode()).hexdigest()


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    """Remember the batch's addresses; CreateCampaign restricts the send to them."""
    if type != CRM_Marketing_CampaignType.Email:
        raise ValueError(f"this module sends Email campaigns only, not {type}")
    key = f"recipients:{campaignId}"
    known = storage.get(key) or []
    seen = set(known)
    for email in contacts:
        if email and email not in seen:
            seen.add(email)
            known.append(email)
    storage.set(key, known)
    # Attribution: classic email_status events may carry no campaign id, only the address.
    # "to:<address hash>" -> "crm:<campaignId>" now; CreateCampaign maps that to the
    # externalId. A hash, not the address: the host's map keeps no personal data.
    addresses = [address_key(email) for email in contacts if email]
    if addresses:
        crm.set_campaign_keys("crm:" + campaignId, addresses)
    return None


def start_time(scheduled):
    """ISO 8601 -> Unisender's "YYYY-MM-DD hh:mm" in UTC (sent with time_zone=UTC)."""
    moment = datetime.fromisoformat(str(scheduled).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def campaign_of_message(message_id):
    """The campaign an earlier call made of ``message_id`` (getCampaigns lists each with its
    message), or None."""
    offset = 0
    while True:
        rows = call_api("getCampaigns", {"limit": "1000", "offset": str(offset)}) or []
        for row in rows:
            if str(row.get("message_id")) == str(message_id):
                return row
        if len(rows) < 1000:
            return None
        offset += len(rows)


def created(request, external_id):
    """What a successful create leaves: the attribution key, the prepared list forgotten."""
    storage.delete(f"recipients:{request.campaignId}")
    storage.delete(f"message:{request.campaignId}")
    crm.set_campaign_keys(external_id, ["crm:" + request.campaignId])
    status = CRM_Marketing_CampaignStatus.Sending
    if request.get("scheduledAt"):
        status = CRM_Marketing_CampaignStatus.Scheduled
    return {"externalId": external_id, "status": status}


def CRM_Marketing_CreateCampaign(request):
    """createEmailMessage + createCampaign for the prepared recipients.

    Idempotent per campaignId (the manifest declares it): the message id is stored durably
    as soon as Unisender returns it, and a repeated call whose message already has a
    campaign (getCampaigns) returns that campaign instead of creating a second one. A
    message whose answer was lost stays an unused draft in Unisender: it sends nothing."""
    # Optional fields may be absent or None: read them with .get().
    html = request.get("html")
    template_id = request.get("templateExternalId")
    scheduled = request.get("scheduledAt")
    category = request.get("categoryExternalId")
    key = f"recipients:{request.campaignId}"
    recipients = storage.get(key) or []
    if not recipients:
        raise ValueError("no prepared recipients for this campaign")
    message = {
        "sender_name": request.senderName or settings.get("sender_name") or "",
        "sender_email": request.senderEmail or settings.get("sender_email") or "",
        "subject": request.subject,
        "list_id": str(settings["list_id"]),
        "generate_text": "1",
    }
    if html:
        message["body"] = html
        message["message_format"] = "raw_html"
    elif template_id:
        message["template_id"] = template_id
    else:
        raise ValueError("the campaign has neither html nor a Unisender template")
    if category:
        message["categories"] = category
    message_key = f"message:{request.campaignId}"
    message_id = storage.get(message_key)
    if message_id:
        existing = campaign_of_message(message_id)
        if existing is not None:
            return created(request, str(existing["id"]))
    else:
        message_id = call_api("createEmailMessage", message)["message_id"]
        storage.set(message_key, str(message_id), durable=True)  # kept if this call dies

    campaign = {
        "message_id": str(message_id),
        "contacts": ",".join(recipients),
        "track_read": "1",
        "track_links": "1",
    }
    if scheduled:
        campaign["start_time"] = start_time(scheduled)
        campaign["time_zone"] = "UTC"
    result = call_api("createCampaign", campaign)
    return created(request, str(result["campaign_id"]))


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    s = call_api("getCampaignCommonStats", {"campaign_id": campaignExternalId}) or {}
    number = lambda name: max(int(s.get(name) or 0), 0)  # noqa: E731
    return {
        "total": number("total"),
        "sent": number("sent"),
        "delivered": number("delivered"),
        "opened": number("read_unique"),
        "clicked": number("clicked_unique"),
        "unsubscribed": number("unsubscribed"),
        "complained": number("spam"),
    }


# --- the webhook --------------------------------------------------------------------------


def reply(status, text):
    return {"status": status, "headers": {"Content-Type": "text/plain"}, "body": text}


def auth_ok(request, auth):
    """auth == md5(raw body with the auth value replaced by the API key), constant time."""
    if not auth or not isinstance(auth, str):
        return False
    encoding = request.headers.get("x-crm-host-body-encoding") or "utf-8"
    raw = request.body.encode(encoding)
    signed = raw.replace(auth.encode(), settings["api_key"].encode())
    return signatures.equals(hashlib.md5(signed).hexdigest(), auth.lower())


def campaign_of(data, email):
    """The campaign an event belongs to: the campaign id it echoes, else the campaign the
    address was last prepared for (the host's attribution map, never "the latest one")."""
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    campaign = data.get("campaign_id") or metadata.get("campaign_id")
    if campaign:
        return str(campaign)
    prepared = crm.campaign_for_key(address_key(email))
    return crm.campaign_for_key(prepared) if prepared else None


def status_actions(event_name, data):
    email = data.get("email")
    table = GO_STATUS if event_name.startswith("transactional") else CLASSIC_STATUS
    status = table.get(str(data.get("status") or ""))
    if not email or status is None:
        return []
    actions = []
    campaign = campaign_of(data, email)
    if campaign:
        actions.append(
            {"type": "UpdateDeliveryStatus", "email": email, "externalId": str(campaign),
             "status": status}
        )
    if status in STOP_MAILING:
        actions.append({"type": "Unsubscribe", "email": email, "externalId": {"all": True}})
    return actions


def event_actions(event):
    if not isinstance(event, dict) or not isinstance(event.get("event_data"), dict):
        return []
    name = str(event.get("event_name") or "")
    data = event["event_data"]
    if name in ("email_status", "transactional_email_status"):
        return status_actions(name, data)
    if name == "campaign_status" and data.get("campaign_id"):
        status = CAMPAIGN_STATUS.get(str(data.get("status") or ""))
        if status is not None:
            return [{"type": "UpdateCampaign", "externalId": str(data["campaign_id"]),
                     "status": status}]
    if name in ("unsubscribe", "unsubscribed") and data.get("email"):
        return [{"type": "Unsubscribe", "email": data["email"], "externalId": {"all": True}}]
    return []  # subscribe, spam_block, user data, account events: nothing to change


def CRM_Marketing_ParseWebhookRequest(request):
    # Unisender may check the URL with a GET when the hook is set. An empty POST carries no
    # event and no auth: a 400 (not 200) so a misconfigured sender sees its request is wrong.
    if request.method != "POST":
        return {"response": reply(200, "OK")}
    if not request.body.strip():
        return {"response": reply(400, "empty body")}
    try:
        payload = json.loads(request.body)
    except ValueError:
        return {"response": reply(400, "body is not JSON")}
    if not isinstance(payload, dict) or not auth_ok(request, payload.get("auth")):
        return {"response": reply(401, "invalid auth")}
    actions = []
    for block in payload.get("events_by_user") or []:
        for event in (block.get("events") if isinstance(block, dict) else None) or []:
            actions.extend(event_actions(event))
    return {"actions": actions, "response": reply(200, "OK")}
