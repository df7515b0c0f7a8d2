"""What can go wrong, as types: every layer raises these, and only the API layer turns them into
HTTP answers (serve_app/api/errors.py), in OpenAI's error shape so existing clients show them.

Each error carries what any caller needs to show it (a message, the field at fault in ``param``, a
machine-readable ``code``, and for refusals that pass, ``retry_after_s``); none carries an HTTP
status, so the engine, the job runner and the Discord bot use the same types without speaking HTTP.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """The base of every error a caller may be shown."""

    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.code
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequestError(ServiceError):
    """The caller asked for something this service will not do; ``param`` names the field."""

    error_type = "invalid_request_error"
    code = "invalid_value"


class ContentPolicyError(InvalidRequestError):
    """The model's safety checker flagged the image(s): OpenAI's content_policy_violation."""

    code = "content_policy_violation"


class AuthenticationError(ServiceError):
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(ServiceError):
    error_type = "not_found_error"
    code = "not_found"


class OverloadedError(ServiceError):
    """The model's queue is full: retry later; nothing was started for this request."""

    error_type = "overloaded_error"
    code = "overloaded"

    def __init__(self, retry_after_s: int, message: str | None = None) -> None:
        super().__init__(
            message or "The service is at capacity; retry after the given delay.",
            retry_after_s=retry_after_s,
        )


class RateLimitedError(ServiceError):
    """A caller is over one of its limits (images per minute, concurrent images, daily budget):
    nothing was queued; ``retry_after_s`` says when the same request would be accepted."""

    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ForbiddenError(ServiceError):
    """Authenticated, but this caller may not do that (reading everyone's usage needs an admin key)."""

    error_type = "permission_error"
    code = "forbidden"


class GenerationTimeoutError(ServiceError):
    error_type = "timeout_error"
    code = "timeout"


class GenerationFailedError(ServiceError):
    """Accepted but failed while rendering (replica crash, out of memory...)."""

    error_type = "server_error"
    code = "generation_failed"


class StorageUnavailableError(ServiceError):
    """The image store (S3 or the data folder) failed; the service itself is fine."""

    error_type = "storage_unavailable"
    code = "storage_unavailable"


class ServiceUnavailableError(ServiceError):
    error_type = "service_unavailable"
    code = "not_configured"


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
