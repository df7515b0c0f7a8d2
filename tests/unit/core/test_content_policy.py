"""Images the safety checker flagged: a 400 when all are, their places kept when some are."""

from __future__ import annotations

import pytest
from support import image_result as result

from serve_app.api.errors import status_code_of
from serve_app.api.openai.protocol import image_entries
from serve_app.core.errors import ContentPolicyError
from serve_app.core.images import ImageResult


def b64(index: int, r: ImageResult) -> dict[str, str]:
    return {"b64_json": r.png.decode()}


def test_every_image_flagged_is_a_400_content_policy_violation() -> None:
    for results in ([result(1, True)], [result(1, True), result(2, True)]):
        with pytest.raises(ContentPolicyError) as raised:
            image_entries(results, "p", b64)
        body = raised.value.body()["error"]
        assert status_code_of(raised.value) == 400
        assert body["code"] == "content_policy_violation" and body["type"] == "invalid_request_error"


def test_partly_flagged_keeps_places_and_never_returns_the_flagged_image() -> None:
    calls: list[int] = []

    def image_of(index: int, r: ImageResult) -> dict[str, str]:
        calls.append(index)
        return {"b64_json": r.png.decode()}

    data = image_entries([result(1), result(2, True), result(3)], "p", image_of)
    assert [d.seed for d in data] == [1, 2, 3]
    assert calls == [0, 2]
    assert data[0].b64_json == "png-1" and data[0].error is None
    assert data[1].b64_json is None and data[1].url is None
    assert data[1].error["code"] == "content_policy_violation"
    assert set(data[1].error) == {"message", "type", "param", "code"}
