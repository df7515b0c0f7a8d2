"""Prefer: wait and Cancel-After as Replicate's clients send them."""

from __future__ import annotations

import pytest

from serve_app.api.predictions.headers import cancel_after_s, prefer_wait_s
from serve_app.core.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("wait", 60.0), ("wait=5", 5.0), ("wait=600", 60.0),
     ("respond-async, wait=10", 10.0), ('wait="7"', 7.0), ("return=minimal", None)],
)
def test_prefer_wait(header: str | None, expected: float | None) -> None:
    assert prefer_wait_s(header, 60.0) == expected


@pytest.mark.parametrize("header", ["wait=0", "wait=-3", "wait=soon", "wait=inf"])
def test_a_bad_prefer_wait_is_a_400_naming_the_header(header: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        prefer_wait_s(header, 60.0)
    assert refused.value.param == "Prefer"


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5),
     ("1m500ms", 60.5), (" 2M ", 120.0)],
)
def test_cancel_after(header: str | None, expected: float | None) -> None:
    assert cancel_after_s(header) == expected


@pytest.mark.parametrize("header", ["", "soon", "5x", "0.5s", "25h", "-5s", "s"])
def test_a_bad_cancel_after_is_a_400_naming_the_header(header: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        cancel_after_s(header)
    assert refused.value.param == "Cancel-After"
