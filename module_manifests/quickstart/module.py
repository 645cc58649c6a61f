"""Quickstart module: maps a service's delivery events to CRM actions.

The service posts {"events": [{"email": ..., "campaign": ..., "event": "delivered"}, ...]}.
"""

import json

STATUS_BY_EVENT = {
    "delivered": CRM_Marketing_DeliveryStatus.Delivered,
    "open": CRM_Marketing_DeliveryStatus.Opened,
    "click": CRM_Marketing_DeliveryStatus.Clicked,
    "bounce": CRM_Marketing_DeliveryStatus.Bounced,
}


def CRM_Marketing_ParseWebhookRequest(request):
    payload = json.loads(request.body or "{}")
    actions = []
    for event in payload.get("events", []):
        kind = event.get("event")
        if kind == "unsubscribe":
            actions.append(
                {"type": "Unsubscribe", "email": event["email"], "externalId": {"all": True}}
            )
        elif kind in STATUS_BY_EVENT:
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
