"""Errors as types, rendered in OpenAI's error shape so existing clients show them properly.

Every error body is ``{"error": {"message", "type", "param", "code"}}``. Input problems name the
field in ``param``; overload carries ``Retry-After``; nothing a client sends can produce a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app import service_metrics

logger = logging.getLogger("ray.serve")


class APIError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


class InvalidRequestError(APIError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_value"


class ContentPolicyError(InvalidRequestError):
    """The model's safety checker flagged the image(s): OpenAI's content_policy_violation."""

    code = "content_policy_violation"


class AuthenticationError(APIError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(APIError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class OverloadedError(APIError):
    """The model's queue is full: retry later; nothing was started for this request."""

    status_code = 503
    error_type = "overloaded_error"
    code = "overloaded"

    def __init__(self, retry_after_s: int, message: str | None = None) -> None:
        super().__init__(
            message or "The service is at capacity; retry after the given delay.",
            headers={"Retry-After": str(retry_after_s)},
        )


class GenerationTimeoutError(APIError):
    status_code = 504
    error_type = "timeout_error"
    code = "timeout"


class GenerationFailedError(APIError):
    """Accepted but failed while rendering (replica crash, out of memory...)."""

    status_code = 500
    error_type = "server_error"
    code = "generation_failed"


class StorageUnavailableError(APIError):
    """The image store (S3 or the data folder) failed; the service itself is fine."""

    status_code = 503
    error_type = "storage_unavailable"
    code = "storage_unavailable"


class ServiceUnavailableError(APIError):
    status_code = 503
    error_type = "service_unavailable"
    code = "not_configured"


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _param_from_location(location: Sequence[int | str]) -> str | None:
    """('body', 'n') -> 'n'; ('query', 'prompt') -> 'prompt'; ('body', 'input', 'seed') -> 'input.seed'."""
    parts = [str(part) for part in location[1:] if not isinstance(part, int)]
    return ".".join(parts) or None


def validation_error_response(error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return InvalidRequestError("The request body is not valid JSON.", code="invalid_json").response()
    param = _param_from_location(first.get("loc", ()))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") in {"model_attributes_type", "dict_type"} and param is None:
        message = "The request body must be a JSON object."
    elif first.get("type") == "missing":
        message = f"'{param}' is required."
    elif first.get("type") == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif param:
        message = f"Invalid '{param}': {message}"
    if len(problems) > 1:
        others = {_param_from_location(p.get("loc", ())) for p in problems[1:]} - {param, None}
        if others:
            message += f" (also invalid: {', '.join(sorted(str(o) for o in others))})"
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    return InvalidRequestError(message, param=param, code=code).response()


def rejection_reason(error: APIError) -> service_metrics.RejectReason | None:
    """Which refusal an error is, for ``raydiffusion_rejected_total``; None for failures after work."""
    if isinstance(error, OverloadedError):
        return "overload"
    if isinstance(error, AuthenticationError):
        return "auth"
    if isinstance(error, InvalidRequestError) and not isinstance(error, ContentPolicyError):
        return "bad_input"
    return None


def install_error_handlers(app: FastAPI, retry_after_s: int = 5) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        reason = rejection_reason(error)
        if reason is not None:
            service_metrics.rejected(reason)
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        service_metrics.rejected("bad_input")
        return validation_error_response(error)

    @app.exception_handler(OSError)
    async def _storage_os(request: Request, error: OSError) -> JSONResponse:
        if isinstance(error, TimeoutError):  # an OSError subclass, but not the store's failure
            return GenerationTimeoutError("The request timed out.").response()
        return _storage_error(request, error, retry_after_s)

    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        pass
    else:

        @app.exception_handler(BotoCoreError)
        async def _storage_boto(request: Request, error: BotoCoreError) -> JSONResponse:
            return _storage_error(request, error, retry_after_s)

        @app.exception_handler(ClientError)
        async def _storage_client(request: Request, error: ClientError) -> JSONResponse:
            return _storage_error(request, error, retry_after_s)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            error_body(str(error.detail), kind, None, None),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("Internal server error.", "server_error", None, "internal_error"),
            status_code=500,
        )


def _storage_error(request: Request, error: Exception, retry_after_s: int) -> JSONResponse:
    """Storage failures (S3 unreachable, disk full) are the store's, not the caller's: 503."""
    logger.error("storage failed on %s %s: %r", request.method, request.url.path, error)
    return StorageUnavailableError(
        "Image storage is unavailable right now; retry shortly (b64_json responses still work).",
        headers={"Retry-After": str(retry_after_s)},
    ).response()
