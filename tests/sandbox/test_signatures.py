"""The ``signatures`` module lent to scripts, checked against SendGrid's published signed
Event Webhook vectors (every case of tests/fixtures/vendor/sendgrid_signed_vector.json)
and run the way a module runs it: inside a compiled script."""

from __future__ import annotations

import json

import pytest

from sandbox.capabilities import InMemoryCapabilities
from sandbox.compiler import compile_script
from sandbox.execution import execute
from sandbox.signatures import equals, verify_ecdsa_p256
from tests.vendor_samples import VENDOR_SAMPLES

SAMPLES = VENDOR_SAMPLES
VECTOR = json.loads((SAMPLES / "sendgrid_signed_vector.json").read_text())
CASES = VECTOR["cases"]

SCRIPT = """
import signatures

def check(public_key, signature, timestamp, body):
    return signatures.verify_ecdsa_p256(public_key, signature, timestamp + body)
"""


def _body(case: dict) -> str:
    """The exact signed text of a case, after the transform the vector file describes."""
    if "body_literal" in case:
        return case["body_literal"]
    body = (SAMPLES / case["body_file"]).read_bytes().decode("utf-8")
    transform = case.get("body_transform")
    if transform == "strip trailing \\r\\n":
        return body.removesuffix("\r\n")
    if transform == "json.loads then json.dumps(indent=2)":
        return json.dumps(json.loads(body), indent=2)
    assert transform is None, f"unknown transform {transform!r}"
    return body


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_published_vectors_in_a_script(case: dict) -> None:
    result = execute(
        compile_script(SCRIPT),
        "check",
        [case["public_key"], case["signature"], case["timestamp"], _body(case)],
        capabilities=InMemoryCapabilities(),
    )
    assert result is case["expect"]


def test_vectors_include_valid_and_invalid_cases() -> None:
    assert {c["expect"] for c in CASES} == {True, False}


@pytest.mark.parametrize(
    ("key", "signature", "payload"),
    [
        ("not base64!", CASES[0]["signature"], "x"),
        (CASES[0]["public_key"], "%%%", "x"),
        (CASES[0]["public_key"], CASES[0]["signature"], 12),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", CASES[0]["signature"], "x"),
        (None, None, None),
    ],
)
def test_malformed_input_is_false_not_an_exception(key, signature, payload) -> None:
    assert verify_ecdsa_p256(key, signature, payload) is False


def test_pem_key_is_accepted() -> None:
    case = CASES[0]
    pem = f"-----BEGIN PUBLIC KEY-----\n{case['public_key']}\n-----END PUBLIC KEY-----"
    assert verify_ecdsa_p256(pem, case["signature"], case["timestamp"] + _body(case))


def test_equals_is_a_plain_comparison_in_constant_time() -> None:
    assert equals("abc", "abc") and equals(b"abc", "abc")
    assert not equals("abc", "abd") and not equals("abc", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=["valid", "wrong-key"])
def test_vectors_in_a_real_worker_process(sandbox_pool, case: dict) -> None:
    """Workers drop privileges before running scripts; verification must not need a late
    import there (cryptography loads its backend lazily)."""
    from sandbox.invocation import Invocation

    result = sandbox_pool.run(
        Invocation(
            source=SCRIPT,
            function="check",
            args=[case["public_key"], case["signature"], case["timestamp"], _body(case)],
        )
    )
    assert result.ok, result.error
    assert result.value is case["expect"]
