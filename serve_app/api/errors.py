"""Errors as HTTP answers: the one place a ``ServiceError`` becomes a status code and a JSON body.

Every error body is ``{"error": {"message", "type", "param", "code"}}``. Input problems name the
field in ``param``; overload carries ``Retry-After``; nothing a client sends can produce a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.core.errors import (
    AuthenticationError,
    ContentPolicyError,
    ForbiddenError,
    GenerationFailedError,
    GenerationTimeoutError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    RateLimitedError,
    ServiceError,
    ServiceUnavailableError,
    StorageUnavailableError,
    error_body,
)
from serve_app.ops import metrics as service_metrics

logger = logging.getLogger("ray.serve")

# Most specific first: a subclass gets its own status before its base's.
STATUS_CODES: tuple[tuple[type[ServiceError], int], ...] = (
    (InvalidRequestError, 400),
    (AuthenticationError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (RateLimitedError, 429),
    (OverloadedError, 503),
    (StorageUnavailableError, 503),
    (ServiceUnavailableError, 503),
    (GenerationTimeoutError, 504),
    (GenerationFailedError, 500),
)


def status_code_of(error: ServiceError) -> int:
    return next((status for kind, status in STATUS_CODES if isinstance(error, kind)), 500)


def error_response(error: ServiceError) -> JSONResponse:
    headers: dict[str, str] = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error.body(), status_code=status_code_of(error), headers=headers)


def _param_from_location(location: Sequence[int | str]) -> str | None:
    """('body', 'n') -> 'n'; ('query', 'prompt') -> 'prompt'; ('body', 'input', 'seed') -> 'input.seed'."""
    parts = [str(part) for part in location[1:] if not isinstance(part, int)]
    return ".".join(parts) or None


def validation_error_response(error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return error_response(InvalidRequestError("The request body is not valid JSON.", code="invalid_json"))
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
    return error_response(InvalidRequestError(message, param=param, code=code))


def rejection_reason(error: ServiceError) -> service_metrics.RejectReason | None:
    """Which refusal an error is, for ``raydiffusion_rejected_total``; None for failures after work."""
    if isinstance(error, OverloadedError):
        return "overload"
    if isinstance(error, AuthenticationError):
        return "auth"
    if isinstance(error, RateLimitedError):
        return "rate_limit"
    if isinstance(error, InvalidRequestError) and not isinstance(error, ContentPolicyError):
        return "bad_input"
    return None


def install_error_handlers(app: FastAPI, retry_after_s: int = 5) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
        reason = rejection_reason(error)
        if reason is not None:
            service_metrics.rejected(reason)
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        service_metrics.rejected("bad_input")
        return validation_error_response(error)

    @app.exception_handler(OSError)
    async def _storage_os(request: Request, error: OSError) -> JSONResponse:
        if isinstance(error, TimeoutError):  # an OSError subclass, but not the store's failure
            return error_response(GenerationTimeoutError("The request timed out."))
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
    return error_response(
        StorageUnavailableError(
            "Image storage is unavailable right now; retry shortly (b64_json responses still work).",
            retry_after_s=retry_after_s,
        )
    )
