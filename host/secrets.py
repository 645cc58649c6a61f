"""Encryption of settings secrets at rest (Fernet), and hashing of API keys.

The key comes from ``CRM_HOST_SECRET_KEY``, or several from ``CRM_HOST_SECRET_KEYS``
(comma-separated): each a Fernet key or any passphrase of at least 16 characters (stretched
with HKDF). With several keys the first encrypts and every one decrypts (``MultiFernet``), so
nodes can be given a new key before any of them writes with it: add the key (second), restart
the nodes, move it first, restart, ``crm-host secrets rotate-key``, remove the old key. With
SQLite and no key configured, a random key is kept in a file beside the database (mode 0600),
so a quick start needs no set-up and a restart can still read what it stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from host.errors import HostError

MIN_PASSPHRASE = 16


class SecretKeyError(HostError):
    kind = "configuration"


def fernet_from_setting(value: str, name: str = "CRM_HOST_SECRET_KEY") -> Fernet:
    """A Fernet for a configured key: a Fernet key as is, a passphrase stretched by HKDF.
    ``name`` is how the error calls the setting."""
    try:
        if len(base64.urlsafe_b64decode(value.encode())) == 32:
            return Fernet(value.encode())
    except (binascii.Error, ValueError):
        pass
    if len(value) < MIN_PASSPHRASE:
        raise SecretKeyError(f"{name} must be a Fernet key or at least {MIN_PASSPHRASE} characters")
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"crm-module-host settings"
    ).derive(value.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def fernet_from_keys(values: Sequence[str]) -> MultiFernet:
    """The keys of ``CRM_HOST_SECRET_KEYS``: the first encrypts, every one decrypts."""
    if not values:
        raise SecretKeyError("CRM_HOST_SECRET_KEYS names no key")
    return MultiFernet(
        [
            fernet_from_setting(value, f"CRM_HOST_SECRET_KEYS key {index}")
            for index, value in enumerate(values, start=1)
        ]
    )


def key_file_fernet(path: Path) -> Fernet:
    """The Fernet kept in ``path``, created (0600) on first use.

    Two hosts starting at once on a new database both find no key file: the key is written
    to a private temporary file and linked into place, so the file appears complete or not
    at all, and the host whose link loses reads the winner's key instead of making its own."""
    if not path.exists():
        key = Fernet.generate_key()
        partial = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key + b"\n")
            os.link(partial, path)
        except FileExistsError:
            pass  # another host created it first: its key is the one
        finally:
            partial.unlink(missing_ok=True)
    return Fernet(path.read_bytes().strip())


class SecretBox:
    """Encrypts and decrypts the secret part of a tenant's module settings.

    The key is given as a loader, called once on first use (:meth:`load`): loading may
    create the key file beside the database, and building a ``Host`` must not touch the disk
    (``Host.open()`` loads it, so a bad key still stops the start)."""

    def __init__(self, key: Fernet | MultiFernet | Callable[[], Fernet | MultiFernet]):
        self._key = key
        self._lock = threading.Lock()

    def load(self) -> MultiFernet:
        """The keys (the first encrypts, all decrypt), loaded on first use; a configuration
        error raises SecretKeyError."""
        with self._lock:
            if callable(self._key) and not isinstance(self._key, Fernet | MultiFernet):
                self._key = self._key()
            key = self._key
            if isinstance(key, Fernet):
                key = self._key = MultiFernet([key])
            assert isinstance(key, MultiFernet)
            return key

    def seal(self, values: Any) -> str | None:
        """The JSON of ``values`` encrypted; None when there is nothing to seal."""
        if not values:
            return None
        return self.load().encrypt(json.dumps(values).encode()).decode()

    def open(self, token: str | None) -> Any:
        """What :meth:`seal` was given (``{}`` for None); the caller interprets its shape."""
        if not token:
            return {}
        try:
            return json.loads(self.load().decrypt(token.encode()))
        except InvalidToken:
            raise _undecryptable() from None

    def reseal(self, token: str) -> str:
        """``token`` encrypted again with the first (current) key, whichever key opens it."""
        try:
            return self.load().rotate(token.encode()).decode()
        except InvalidToken:
            raise _undecryptable() from None


def _undecryptable() -> SecretKeyError:
    return SecretKeyError(
        "stored secrets cannot be decrypted: no configured key opens them "
        "(CRM_HOST_SECRET_KEY differs from the key they were written with, or "
        "CRM_HOST_SECRET_KEYS lacks it)"
    )


def new_api_key() -> str:
    return "crm_" + secrets.token_urlsafe(32)


def new_admin_token() -> str:
    return "crmadm_" + secrets.token_urlsafe(32)


def new_webhook_token() -> str:
    return secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """API keys are 256-bit random strings, so a plain SHA-256 is a sound one-way store."""
    return hashlib.sha256(key.encode()).hexdigest()
