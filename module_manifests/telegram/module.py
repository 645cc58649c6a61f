"""Telegram messenger module for crm-module-host (Bot API, https://core.telegram.org/bots/api).

Every call is ``POST <api_base_url>/bot<token>/<method>`` with a JSON body; replies are
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code", "description",
"parameters"?}``.

Linking contacts to chats (a bot cannot find a user by phone or e-mail): the CRM sends each
contact the deep link ``https://t.me/<bot>?start=c_<contact id>``. Opening it makes Telegram
post ``/start c_<contact id>``; the webhook then stores, in ``storage``::

    chat:<chat id>       -> {"contact": <contact id or None>, "blocked": bool, "optedOut": bool}
    contact:<contact id> -> <chat id>

Other keys: ``prepared:<campaignId>`` (contact ids of a campaign being prepared),
``campaign:<externalId>`` (its counters, for stats) and ``reports`` (delivery failures and
unsubscribes found while sending, turned into actions by the next webhook call).
Unsubscribes use the category ``"telegram"``: the contact stops getting Telegram campaigns
(this module skips them) and stays subscribed to e-mail. See README.md.
"""

import json
import time

import signatures

DEFAULT_API = "https://api.telegram.org"
CATEGORY = "telegram"  # the CRM unsubscribe category of this channel
SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_SENDS = 45  # sendMessage calls per invocation: the platform allows 50 fetch() calls
SLEEP_BUDGET = 4.0  # seconds of 429 retry_after we may wait (the sandbox caps sleep at 5 s)
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]


# --- the Bot API --------------------------------------------------------------------------


def bot_call(method, params=None):
    """Call one method; returns the whole reply ({"ok": ...}) so callers can react to
    error_code / retry_after. Raises only when the reply is not a Bot API reply."""
    base = (settings.get("api_base_url") or DEFAULT_API).rstrip("/")
    response = fetch(f"{base}/bot{settings['bot_token']}/{method}", method="POST",
                     json=params or {})
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or "ok" not in data:
        raise RuntimeError(f"Telegram {method}: HTTP {response.status}, not a Bot API reply")
    return data


def bot_result(method, params=None):
    data = bot_call(method, params)
    if not data["ok"]:
        raise RuntimeError(
            f"Telegram {method} failed: {data.get('error_code')} {data.get('description')}"
        )
    return data["result"]


def bot_id():
    """The bot's id is the part of the token before the colon."""
    return settings["bot_token"].split(":")[0]


# --- chats and contacts -------------------------------------------------------------------


def chat_state(chat_id):
    return storage.get(f"chat:{chat_id}") or {"contact": None, "blocked": False,
                                               "optedOut": False}


def email_of(contact_id):
    if not contact_id:
        return None
    found = crm.contacts([contact_id])
    return found[0].get("email") if found else None


def unsubscribe(contact_id):
    """The Unsubscribe action for a linked contact, or [] when the CRM has no e-mail to name
    the contact by (the contract identifies contacts by e-mail)."""
    email = email_of(contact_id)
    if not email:
        log(f"contact {contact_id} has no e-mail: its Telegram unsubscribe is kept by the "
            "module only")
        return []
    return [{"type": "Unsubscribe", "email": email, "externalId": CATEGORY}]


def link(chat_id, contact_id):
    """Link a chat to an existing contact; a chat links to one contact at a time."""
    if not crm.contacts([contact_id]):
        log(f"/start for unknown contact {contact_id!r} ignored")
        return False
    state = chat_state(chat_id)
    if state["contact"] and state["contact"] != contact_id:
        storage.delete(f"contact:{state['contact']}")
    storage.set(f"chat:{chat_id}", {"contact": contact_id, "blocked": False, "optedOut": False})
    storage.set(f"contact:{contact_id}", chat_id)
    return True


def stop(chat_id, field):
    """The chat blocked the bot (field "blocked") or asked to stop ("optedOut")."""
    state = chat_state(chat_id)
    already = state["blocked"] or state["optedOut"]
    state[field] = True
    storage.set(f"chat:{chat_id}", state)
    return [] if already else unsubscribe(state["contact"])


# --- the webhook --------------------------------------------------------------------------


def reply(status, body):
    return {"status": status, "headers": {}, "body": body}


def on_message(message):
    text = str(message.get("text") or "").strip()
    chat_id = (message.get("chat") or {}).get("id")
    if chat_id is None or not text.startswith("/"):
        return [], None
    command, _, payload = text.partition(" ")
    command = command.split("@")[0]  # /start@my_bot in groups
    payload = payload.strip()
    if command == "/start":
        linked = payload.startswith("c_") and link(chat_id, payload[2:])
        if not linked and storage.get(f"chat:{chat_id}") is None:
            storage.set(f"chat:{chat_id}", chat_state(chat_id))  # known, not linked yet
        welcome = settings.get("welcome_text")
        if linked and welcome:
            # Telegram accepts a method call as the webhook's answer: no extra request.
            return [], {"method": "sendMessage", "chat_id": chat_id, "text": welcome}
        return [], None
    if command == "/stop":
        return stop(chat_id, "optedOut"), None
    return [], None


def on_my_chat_member(change):
    chat = change.get("chat") or {}
    status = (change.get("new_chat_member") or {}).get("status")
    if chat.get("type") != "private" or chat.get("id") is None:
        return []
    if status == "kicked":  # the user blocked the bot
        return stop(chat["id"], "blocked")
    if status == "member":  # unblocked: sending may resume (the CRM keeps its unsubscribe)
        state = chat_state(chat["id"])
        state["blocked"] = False
        storage.set(f"chat:{chat['id']}", state)
    return []


def on_callback(query):
    data = str(query.get("data") or "")
    chat_id = (query.get("from") or {}).get("id")
    answer = {"method": "answerCallbackQuery", "callback_query_id": str(query.get("id", ""))}
    if data.startswith("unsub") and chat_id is not None:
        answer["text"] = "You will not get these messages any more."
        return stop(chat_id, "optedOut"), answer
    return [], answer


def flush_reports():
    """Actions the last campaign sends left for the CRM (see CreateMessengerCampaign)."""
    reports = storage.get("reports") or []
    if reports:
        storage.delete("reports")
    return reports


def CRM_Marketing_ParseWebhookRequest(request):
    secret = settings["webhook_secret"]
    given = request.headers.get(SECRET_HEADER)
    if not given:
        return {"response": reply(401, {"ok": False, "error": "secret token missing"})}
    if not signatures.equals(given, secret):
        return {"response": reply(403, {"ok": False, "error": "secret token mismatch"})}
    try:
        update = json.loads(request.body)
    except ValueError:
        return {"response": reply(400, {"ok": False, "error": "body is not JSON"})}
    if not isinstance(update, dict):
        return {"response": reply(400, {"ok": False, "error": "not an Update"})}
    actions = flush_reports()
    answer = None
    if isinstance(update.get("message"), dict):
        found, answer = on_message(update["message"])
        actions.extend(found)
    elif isinstance(update.get("my_chat_member"), dict):
        actions.extend(on_my_chat_member(update["my_chat_member"]))
    elif isinstance(update.get("callback_query"), dict):
        found, answer = on_callback(update["callback_query"])
        actions.extend(found)
    # edited_message, channel posts, inline queries...: nothing to do.
    return {"actions": actions, "response": reply(200, answer or {"ok": True})}


# --- messenger setup ----------------------------------------------------------------------


def CRM_Marketing_GetMessengerTypes():
    return [AccountType.Telegram]


def CRM_Marketing_GetMessengerBots():
    """getMe; with ``webhook_url`` set, also (re)registers the webhook with its secret."""
    me = bot_result("getMe")
    if settings.get("webhook_url"):
        bot_result("setWebhook", {"url": settings["webhook_url"],
                                  "secret_token": settings["webhook_secret"],
                                  "allowed_updates": ALLOWED_UPDATES})
    username = me.get("username") or ""
    return [{
        "id": str(me["id"]),
        "name": me.get("first_name") or username or str(me["id"]),
        "type": AccountType.Telegram,
        "description": f"@{username}; link a contact with https://t.me/{username}"
                       "?start=c_<contact id>",
    }]


# --- campaigns ----------------------------------------------------------------------------


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    if type != CRM_Marketing_CampaignType.Messenger:
        raise ValueError(f"this module sends Messenger campaigns only, not {type}")
    # A batch may come again after a crash (the contract): each contact is kept once, so a
    # repeated batch never sends anyone the message twice.
    key = f"prepared:{campaignId}"
    prepared = storage.get(key) or []
    known = set(prepared)
    for contact in contacts:
        if str(contact) not in known:
            known.add(str(contact))
            prepared.append(str(contact))
    storage.set(key, prepared)
    return None


def message_for(request, chat_id):
    body = {"chat_id": chat_id, "text": request.text}
    if settings.get("parse_mode"):
        body["parse_mode"] = settings["parse_mode"]
    if settings.get("unsubscribe_button"):
        button = {"text": settings["unsubscribe_button"],
                  "callback_data": f"unsub:{request.campaignId}"[:64]}
        body["reply_markup"] = {"inline_keyboard": [[button]]}
    return body


def send(body, waited):
    """sendMessage with one retry after a 429 whose retry_after fits the sleep budget.
    Returns (outcome, seconds waited): "sent", "blocked", "rate_limited" or "failed"."""
    reply_data = bot_call("sendMessage", body)
    if reply_data["ok"]:
        return "sent", waited
    code = reply_data.get("error_code")
    if code == 429:
        wait = (reply_data.get("parameters") or {}).get("retry_after") or 1
        if waited + wait > SLEEP_BUDGET:
            return "rate_limited", waited
        time.sleep(wait)
        return send(body, waited + wait)
    if code == 403:  # "Forbidden: bot was blocked by the user" (or the user is deactivated)
        return "blocked", waited
    log(f"sendMessage to {body['chat_id']}: {code} {reply_data.get('description')}")
    return "failed", waited


def CRM_Marketing_CreateMessengerCampaign(request):
    """sendMessage to the linked chat of every prepared contact (see README for limits)."""
    if request.get("scheduledAt"):
        raise ValueError("Telegram bots cannot schedule messages: send it without scheduledAt")
    if str(request.botId) != bot_id():
        raise ValueError(f"botId {request.botId} is not the bot of the configured token")
    contact_ids = storage.get(f"prepared:{request.campaignId}") or []
    external_id = f"tg-{request.campaignId}"
    counts = {"total": len(contact_ids), "sent": 0, "failed": 0, "unsubscribed": 0}
    failed = []  # contact ids whose delivery must be reported Failed
    blocked = []  # contact ids that blocked the bot (also unsubscribed)
    waited = 0.0
    sends = 0
    stopped = None
    for contact_id in contact_ids:
        chat_id = storage.get(f"contact:{contact_id}")
        state = chat_state(chat_id) if chat_id is not None else None
        if state is None or state["blocked"] or state["optedOut"]:
            failed.append(contact_id)  # not linked, or no longer reachable
            continue
        if stopped is None and sends >= MAX_SENDS:
            stopped = "the per-invocation send budget"
        if stopped is not None:
            failed.append(contact_id)
            continue
        try:
            outcome, waited = send(message_for(request, chat_id), waited)
        except FetchError as error:  # network failure: the rest would fail the same way
            log(f"sendMessage: {error}")
            outcome, stopped = "failed", "a network failure"
        sends += 1
        if outcome == "sent":
            counts["sent"] += 1
        elif outcome == "blocked":
            blocked.append(contact_id)
            state["blocked"] = True
            storage.set(f"chat:{chat_id}", state)
        else:
            failed.append(contact_id)
            if outcome == "rate_limited":
                stopped = "Telegram's rate limit"
    if stopped:
        log(f"{len(failed)} recipient(s) not sent because of {stopped}")
    counts["failed"] = len(failed) + len(blocked)
    counts["unsubscribed"] = len(blocked)
    storage.set(f"campaign:{external_id}", counts)
    storage.delete(f"prepared:{request.campaignId}")
    report(external_id, failed, blocked)
    status = CRM_Marketing_CampaignStatus.Sent
    if counts["sent"] == 0:
        status = CRM_Marketing_CampaignStatus.Failed
    return {"externalId": external_id, "status": status}


def report(external_id, failed, blocked):
    """Queue the failures for the next webhook call: the host marks every recipient Sent when
    this function returns, and only a webhook result can correct a delivery."""
    ids = failed + blocked
    if not ids:
        return
    emails = {c["id"]: c.get("email") for c in crm.contacts(ids)}
    queued = storage.get("reports") or []
    for contact_id in ids:
        email = emails.get(contact_id)
        if not email:
            continue
        queued.append({"type": "UpdateDeliveryStatus", "email": email,
                       "externalId": external_id, "status": "Failed"})
        if contact_id in blocked:
            queued.append({"type": "Unsubscribe", "email": email, "externalId": CATEGORY})
    storage.set("reports", queued)


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    counts = storage.get(f"campaign:{campaignExternalId}")
    if counts is None:
        raise ValueError(f"no campaign {campaignExternalId} was sent by this module")
    # The Bot API has no delivery or read receipts: an accepted message is in the chat.
    return {"total": counts["total"], "sent": counts["sent"], "delivered": counts["sent"],
            "failed": counts["failed"], "unsubscribed": counts["unsubscribed"]}
