"""The request headers Replicate's clients send with a prediction: ``Prefer: wait`` and ``Cancel-After``.

``Prefer: wait`` (RFC 7240's preference, as Replicate reads it) holds the creating request open
until the prediction finishes, up to a bound (``wait=N`` seconds, else the bound itself), and
answers with it as it then is: finished, or still running when the bound passed (the client
then polls as usual). ``Cancel-After`` is a duration (``30s``, ``5m``, ``1h30m``, ``1.5s``, or bare
seconds) after which a prediction that has not finished is canceled.
"""

from __future__ import annotations

import re

from serve_app.core.errors import InvalidRequestError

MAX_CANCEL_AFTER_S = 24 * 3600.0
MIN_CANCEL_AFTER_S = 1.0
_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:h|ms|m|s))+$")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def prefer_wait_s(prefer: str | None, bound_s: float) -> float | None:
    """Seconds to hold the request for, or None when the client did not ask to wait."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not value:
            return bound_s
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            raise InvalidRequestError(
                f"Invalid 'Prefer: wait={value}': give a positive number of seconds (at most {bound_s:g}).",
                param="Prefer",
            )
        return min(seconds, bound_s)
    return None


def cancel_after_s(value: str | None) -> float | None:
    """The ``Cancel-After`` header in seconds, or None when absent; a 400 naming it when malformed."""
    if value is None:
        return None
    text = value.strip().lower()
    seconds: float | None = None
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        seconds = float(text)
    elif _DURATION.match(text):
        seconds = sum(float(number) * _UNIT_S[unit] for number, unit in _PART.findall(text))
    if seconds is None or not MIN_CANCEL_AFTER_S <= seconds <= MAX_CANCEL_AFTER_S:
        raise InvalidRequestError(
            f"Invalid 'Cancel-After: {value[:40]}': a duration such as 30s, 5m or 1h30m, "
            f"from {MIN_CANCEL_AFTER_S:g} s to {MAX_CANCEL_AFTER_S / 3600:g} h.",
            param="Cancel-After",
        )
    return seconds
