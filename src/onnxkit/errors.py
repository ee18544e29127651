"""One error hierarchy for the whole project (stdlib only).

Each error carries an HTTP status; every transport translates it exactly once
(OpenAI ``{"error": {...}}``, KServe ``{"error": "..."}``, gRPC status codes).
Messages name the thing, what was expected, what arrived, and the fix.
"""

from __future__ import annotations

from http import HTTPStatus


class OnnxkitError(Exception):
    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def within(self, context: str) -> OnnxkitError:
        """The same error (class, status, param, code) with ``context`` before its message: raise it ``from`` this."""
        return type(self)(f"{context}: {self.message}", param=self.param, code=self.code)


class InvalidRequest(OnnxkitError):
    status = HTTPStatus.BAD_REQUEST
    type = "invalid_request_error"


class Unauthorized(OnnxkitError):
    status = HTTPStatus.UNAUTHORIZED
    type = "authentication_error"


class ModelNotFound(OnnxkitError):
    status = HTTPStatus.NOT_FOUND
    type = "not_found_error"


class PayloadTooLarge(OnnxkitError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    type = "invalid_request_error"


class RequestTimeout(OnnxkitError):
    status = HTTPStatus.REQUEST_TIMEOUT
    type = "invalid_request_error"


class Overloaded(OnnxkitError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    type = "rate_limit_error"


class ModelUnavailable(OnnxkitError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "server_error"


class InternalError(OnnxkitError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    type = "server_error"


class SupplyError(OnnxkitError):
    """A model could not be fetched, built or verified (CLI-facing)."""


class ChecksumMismatch(SupplyError):
    pass


class MissingDependency(OnnxkitError):
    """An optional extra is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'onnxkit[{extra}]'")
