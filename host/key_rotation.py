"""Re-encrypt every sealed setting and stored webhook request with the current key
(``crm-host secrets rotate-key``).

The first key of ``CRM_HOST_SECRET_KEYS`` encrypts; every key decrypts. Once every node runs
with the new key first, this rewrites each sealed value with it, so the old key can be
removed. It runs in small transactions (``batch_size`` enablements each) in primary-key
order, so serving nodes are never blocked long; a value sealed meanwhile by a node is already
under the new key, and running it again is harmless.
"""

from __future__ import annotations

from sqlalchemy import select, tuple_

from host.db.engine import Database
from host.db.models import Enablement, WebhookRequest
from host.secrets import SecretBox, SecretKeyError

DEFAULT_BATCH = 500


def rotate_sealed_settings(db: Database, box: SecretBox, *, batch_size: int = DEFAULT_BATCH) -> int:
    """Reseal every enablement's secrets with the current key; the number resealed. A value
    no configured key opens stops the rotation with an error naming its tenant and module
    (batches before it stay committed: they are valid under the new key)."""
    resealed = 0
    after: tuple[str, str] | None = None
    while True:
        with db.transaction() as session:
            query = select(Enablement).where(Enablement.secrets_encrypted.is_not(None))
            if after is not None:
                query = query.where(tuple_(Enablement.tenant_id, Enablement.module_id) > after)
            rows = session.scalars(
                query.order_by(Enablement.tenant_id, Enablement.module_id).limit(batch_size)
            ).all()
            for row in rows:
                assert row.secrets_encrypted is not None
                try:
                    row.secrets_encrypted = box.reseal(row.secrets_encrypted)
                except SecretKeyError as exc:
                    raise SecretKeyError(
                        f"{exc.message} (tenant {row.tenant_id}, module {row.module_id})"
                    ) from None
        resealed += len(rows)
        if len(rows) < batch_size:
            return resealed
        after = (rows[-1].tenant_id, rows[-1].module_id)


def rotate_stored_requests(db: Database, box: SecretBox, *, batch_size: int = DEFAULT_BATCH) -> int:
    """Reseal every stored webhook request with the current key; the number resealed. They
    are sealed with the same key as the settings, so the old key can only go once these are
    resealed too (or purged by retention)."""
    resealed = 0
    after = 0
    while True:
        with db.transaction() as session:
            rows = session.scalars(
                select(WebhookRequest)
                .where(WebhookRequest.id > after)
                .order_by(WebhookRequest.id)
                .limit(batch_size)
            ).all()
            for row in rows:
                try:
                    row.sealed = box.reseal(row.sealed)
                except SecretKeyError as exc:
                    raise SecretKeyError(
                        f"{exc.message} (stored webhook request {row.id})"
                    ) from None
        resealed += len(rows)
        if len(rows) < batch_size:
            return resealed
        after = rows[-1].id
