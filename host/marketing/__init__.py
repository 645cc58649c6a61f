"""The CRM Marketing flows around each CRM_Marketing_* function (SPEC §2): contacts,
templates, campaigns, stats, webhooks and the outbox."""
