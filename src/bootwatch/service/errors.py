"""Errors the service answers with, in MAA's shape.

:class:`ApiError` carries the HTTP status and the MAA error code
(``InvalidParameter``, ``PolicyParsingError``, ``Unauthorized``, ...); the app's
exception handler turns it, and every other :class:`~bootwatch.errors.BootwatchError`
(see :func:`maa_code_for`), into ``{"error": {"code", "message"}}`` plus the
``x-ms-error-code`` header.  Handlers raise these; nothing else formats errors.
"""

from __future__ import annotations

from bootwatch.errors import (
    BootwatchError,
    ConflictError,
    InputError,
    NotFoundError,
    OperationRefusedError,
    PolicyEvaluationError,
    PolicyParsingError,
    PolicySignatureError,
    RollbackRefusedError,
    StorageError,
    VerificationError,
)

__all__ = [
    "ApiError",
    "forbidden",
    "invalid_operation",
    "invalid_parameter",
    "maa_code_for",
    "not_found",
    "unauthorized",
]


class ApiError(BootwatchError):
    """An error answered to the client with ``status`` and MAA ``maa_code``."""

    code = "api_error"

    def __init__(
        self,
        status: int,
        maa_code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.maa_code = maa_code
        self.headers = dict(headers or {})


def invalid_parameter(message: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message)


def invalid_operation(message: str) -> ApiError:
    return ApiError(400, "InvalidOperation", message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "NotFound", message)


def maa_code_for(exc: BootwatchError) -> tuple[int, str]:
    """Map a library error to (HTTP status, MAA error code)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.maa_code
    if isinstance(exc, PolicyParsingError):
        return 400, "PolicyParsingError"
    if isinstance(exc, PolicyEvaluationError):
        return 400, "PolicyEvaluationError"
    if isinstance(exc, PolicySignatureError):
        return 401, "Unauthorized"
    if isinstance(exc, InputError | VerificationError):
        return 400, "InvalidParameter"
    if isinstance(exc, StorageError):
        return 503, "ServiceUnavailable"
    if isinstance(exc, NotFoundError):
        return 404, "NotFound"
    if isinstance(exc, RollbackRefusedError):
        return 409, "RollbackRefused"
    if isinstance(exc, OperationRefusedError):
        return 400, "InvalidOperation"
    if isinstance(exc, ConflictError):
        return 409, "InvalidOperation"
    return 500, "InternalError"
