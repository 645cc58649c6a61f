"""Signature checks scripts cannot write themselves, offered as the ``signatures`` module.

Webhook senders sign their requests (SendGrid: ECDSA P-256 over timestamp + body;
others: HMAC or MD5 digests compared with a shared key). RestrictedPython scripts have no
elliptic-curve code and no safe way to compare secrets in constant time, so the sandbox
lends these small, total functions: they return ``False`` for anything malformed instead of
raising library internals at the script.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.backends.openssl import backend as _openssl_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAX_SIGNED_BYTES = 20 * 1024 * 1024

# cryptography loads its OpenSSL backend lazily, on the first key operation. In a sandbox
# worker that would be an import after the worker dropped its privileges, when the
# interpreter's files may no longer be readable; loading it here, at worker start, keeps
# every later call import-free.
assert _openssl_backend is not None


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _public_key(text: str) -> ec.EllipticCurvePublicKey | None:
    """A P-256 public key from PEM, or from the base64 DER that dashboards show."""
    raw = text.strip()
    try:
        if raw.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(raw.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(raw, validate=True))
    except (ValueError, TypeError, binascii.Error):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return None
    return key


def verify_ecdsa_p256(public_key: str, signature: str, payload: str | bytes) -> bool:
    """True when ``signature`` (base64 DER) is a valid ECDSA P-256 / SHA-256 signature of
    ``payload`` (text is UTF-8 encoded) by ``public_key`` (PEM or base64 DER)."""
    if not isinstance(public_key, str) or not isinstance(signature, str):
        return False
    if not isinstance(payload, str | bytes) or len(payload) > MAX_SIGNED_BYTES:
        return False
    key = _public_key(public_key)
    if key is None:
        return False
    try:
        der = base64.b64decode(signature.strip(), validate=True)
        key.verify(der, _bytes(payload), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def equals(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison of two secrets (digests, tokens); text is UTF-8 encoded."""
    if not isinstance(a, str | bytes) or not isinstance(b, str | bytes):
        return False
    return hmac.compare_digest(_bytes(a), _bytes(b))
