"""Quickstart module: maps a service's delivery events to CRM actions.

The service posts {"events": [{"email": ..., "campaign": ..., "event": "delivered"}, ...]}.
A body that is not such an object is answered 400 with nothing applied: a 4xx tells the
service the request itself is wrong, so it does not retry it as it would after a 500.
"""

import json

STATUS_BY_EVENT = {
    "delivered": CRM_Marketing_DeliveryStatus.Delivered,
    "open": CRM_Marketing_DeliveryStatus.Opened,
    "click": CRM_Marketing_DeliveryStatus.Clicked,
    "bounce": CRM_Marketing_DeliveryStatus.Bounced,
}


def bad_request(reason):
    return {"response": {"status": 400, "body": {"ok": False, "error": reason}}}


def CRM_Marketing_ParseWebhookRequest(request):
    try:
        payload = json.loads(request.body)
    except ValueError:
        return bad_request("the body is not JSON")
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        return bad_request('expected {"events": [...]}')
    actions = []
    for event in payload["events"]:
        if not isinstance(event, dict) or not event.get("email"):
            continue  # nothing to apply without an address
        kind = event.get("event")
        if kind == "unsubscribe":
            actions.append(
                {"type": "Unsubscribe", "email": event["email"], "externalId": {"all": True}}
            )
        elif kind in STATUS_BY_EVENT and event.get("campaign"):
            actions.append(
                {
                    "type": "UpdateDeliveryStatus",
                    "email": event["email"],
                    "externalId": event["campaign"],
                    "status": STATUS_BY_EVENT[kind],
                }
            )
    return {"actions": actions}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError
