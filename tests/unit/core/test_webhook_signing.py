"""Standard Webhooks signatures, checked with the specification's own Python library."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from serve_app.core.webhooks import signature_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_library_verifies_our_signature_and_refuses_a_tampered_body() -> None:
    payload = json.dumps({"id": "pred_1", "status": "succeeded"}, separators=(",", ":")).encode()
    headers = signature_headers(SECRET, "msg_pred_1_completed", payload)
    assert Webhook(SECRET).verify(payload, headers) == {"id": "pred_1", "status": "succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(payload.replace(b"succeeded", b"failed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(payload, headers)


def test_a_retry_keeps_its_id_and_signs_its_own_timestamp() -> None:
    first = signature_headers(SECRET, "msg_x", b"{}", at=1_000_000)
    later = signature_headers(SECRET, "msg_x", b"{}", at=1_000_060)
    assert first["webhook-id"] == later["webhook-id"] == "msg_x"
    assert first["webhook-timestamp"] != later["webhook-timestamp"]
    assert first["webhook-signature"] != later["webhook-signature"]
    assert first["webhook-signature"].startswith("v1,")
