"""One error envelope for every failure path, in OpenAI's shape:
{"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging
import re

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

log = logging.getLogger("llmq.gateway")


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class APIError(Exception):
    """Raised anywhere in the gateway; the app's handler turns it into the envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, type=type, param=param, code=code)
        self.retry_after = retry_after

    def response(self) -> Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return Response(ErrorEnvelope(self.body), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")


def rate_limited(message: str, retry_after: int) -> APIError:
    return APIError(429, message, type="rate_limit_error", code="rate_limit_exceeded", retry_after=retry_after)


def unavailable(message: str, retry_after: int, code: str = "service_unavailable") -> APIError:
    return APIError(503, message, type="server_error", code=code, retry_after=retry_after)


_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def _param_of(key: str, message: str) -> tuple[str | None, bool]:
    """Litestar reports the msgspec path as key ("data" for the body itself, "messages[0]", ...)."""
    prefix = "" if key in ("data", "") else key
    for pattern, unknown in ((_UNKNOWN_FIELD, True), (_MISSING_FIELD, False)):
        found = pattern.search(message)
        if found:
            name = found.group(1)
            return (f"{prefix}.{name}" if prefix else name), unknown
    return (prefix or None), False


def validation_error(exc: ValidationException) -> APIError:
    extra = exc.extra if isinstance(exc.extra, list) and exc.extra else None
    if not extra:
        return bad_request(str(exc.detail) or "Invalid request body.")
    first = extra[0] if isinstance(extra[0], dict) else {"message": str(extra[0])}
    message = str(first.get("message", exc.detail))
    param, unknown = _param_of(str(first.get("key", "")), message)
    if unknown:
        return bad_request(f"`{param}` is not supported by this server.", param=param, code="unsupported_parameter")
    return bad_request(f"Invalid value for `{param}`: {message}" if param else message, param=param)


_HTTP_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def handle_api_error(_: Request, exc: APIError) -> Response:
    return exc.response()


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        return validation_error(exc).response()
    status = exc.status_code
    if status >= 500:
        log.error("HTTP %s on %s %s: %s", status, request.method, request.url.path, exc.detail)
        return APIError(status, "The server had an error processing the request.", type="server_error").response()
    message = {
        404: f"Not found: {request.method} {request.url.path}",
        405: f"Method {request.method} is not allowed on {request.url.path}",
        413: "Request body is too large.",
    }.get(status, str(exc.detail))
    error = APIError(status, message, type="invalid_request_error", code=_HTTP_CODES.get(status))
    response = error.response()
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def handle_unexpected(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return APIError(500, "The server had an error processing the request.", type="server_error").response()


EXCEPTION_HANDLERS = {
    APIError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
