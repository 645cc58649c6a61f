"""The CRM_Marketing_* contract between the host and modules (SPEC §2, §3)."""
