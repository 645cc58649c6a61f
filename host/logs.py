"""Logs without credentials, as text or JSON lines.

The public webhook URL carries its credential in the path (``/hooks/{tenant}/{module}/{token}``)
and callers sometimes put keys in query strings (``?api_key=…``), so an access log written as
uvicorn does by default hands whoever reads the log the right to post webhooks for every
tenant. :class:`CredentialFilter` masks both in every record before any handler formats it;
``CRM_HOST_LOG_FORMAT=json`` writes one JSON object a line for log shippers, each with the
``request_id`` of the HTTP request it was logged for (:mod:`host.request_ids`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from host.request_ids import current_request_id

MASK = "***"

_HOOK_TOKEN = re.compile(r"(/hooks/[^/?#\s]+/[^/?#\s]+/)[^/?#\s\"']+")
_QUERY_SECRET = re.compile(
    r"([?&](?:[^=&#\s]*(?:token|key|secret|signature|password|auth)[^=&#\s]*)=)[^&#\s\"']*",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def mask_credentials(text: str) -> str:
    """``text`` with webhook tokens, credential-like query values and bearer tokens masked."""
    text = _HOOK_TOKEN.sub(rf"\g<1>{MASK}", text)
    text = _QUERY_SECRET.sub(rf"\g<1>{MASK}", text)
    return _BEARER.sub(rf"\g<1>{MASK}", text)


class CredentialFilter(logging.Filter):
    """Masks credentials in a record's message and arguments (uvicorn's access records keep the
    request path in ``args``, which its formatter reads)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_credentials(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_credentials(a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.args, dict):
            record.args = {
                k: mask_credentials(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request id when the
    record was logged while serving a request (and the exception, if any). Handlers format
    in the thread that logs, so the request's context variable is still the current one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = mask_credentials(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def logging_config(log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn and the host's own loggers."""
    if log_format == "json":
        formatters: dict[str, Any] = {
            "default": {"()": JsonLineFormatter},
            "access": {"()": JsonLineFormatter},
        }
    else:
        formatters = {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            },
        }
    filters = {"credentials": {"()": CredentialFilter}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": formatters,
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["credentials"],
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "filters": ["credentials"],
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "host": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "plugins": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "sandbox": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
