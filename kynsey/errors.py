"""Kynsey's domain errors, each carrying its HTTP status and error code.

One handler in ``kynsey.web.errors`` renders them as
``{"error": {"code": ..., "message": ..., **details}}``. Services raise these,
never ``HTTPException``.

KynseyError (500 internal)
├── InvalidRequest (422 invalid_request)
├── NotAuthenticated (401 not_authenticated)
├── PermissionDenied (403 forbidden)
│   ├── TierLocked (403 tier_locked: carries the plans that unlock it)
│   └── CsrfFailed (403 csrf_failed)
├── NotFound (404 not_found)
│   ├── UnknownTier (404 unknown_tier)
│   └── ConversationNotFound (404 conversation_not_found)
├── Conflict (409 conflict)
│   └── NotRunningHere (409 not_running_here: a reply another instance is writing)
├── RateLimited (429 rate_limited: carries retry_after)
├── FeatureDisabled (403 feature_disabled)
├── TierUnavailable (503 or 409 tier_unavailable: carries status and reason)
└── BackendError (502 backend_error) - raised by backends, one model for all kinds
    ├── BackendUnreachable (503 backend_unreachable)
    ├── ModelMissing (409 model_missing)
    ├── BackendBusy (503 backend_busy)
    ├── ModelLoadFailed (502 model_load_failed)
    ├── StreamBroken (502 stream_broken)
    ├── CircuitOpen (503 circuit_open)
    └── PromptTooLong (422 prompt_too_long: the request's fault, so no circuit or host breaker counts it)

CatalogError is not an HTTP error: it stops start-up (or a reload) with the
file, tier and field named.
"""

from __future__ import annotations

from typing import Any


class KynseyError(Exception):
    status = 500
    code = "internal"
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}  # extra response headers (Retry-After, rate-limit figures)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidRequest(KynseyError):
    status, code = 422, "invalid_request"


class NotAuthenticated(KynseyError):
    status, code = 401, "not_authenticated"


class PermissionDenied(KynseyError):
    status, code = 403, "forbidden"


class TierLocked(PermissionDenied):
    code = "tier_locked"


class CsrfFailed(PermissionDenied):
    code = "csrf_failed"


class FeatureDisabled(PermissionDenied):
    code = "feature_disabled"


class NotFound(KynseyError):
    status, code = 404, "not_found"


class UnknownTier(NotFound):
    code = "unknown_tier"


class ConversationNotFound(NotFound):
    code = "conversation_not_found"


class Conflict(KynseyError):
    status, code = 409, "conflict"


class NotRunningHere(Conflict):
    code = "not_running_here"


class RateLimited(KynseyError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int, limit: str, headers: dict[str, str]) -> None:
        super().__init__(message, retry_after=retry_after, limit=limit)
        self.retry_after = retry_after
        self.headers = {**headers, "Retry-After": str(retry_after)}


class TierUnavailable(KynseyError):
    code = "tier_unavailable"

    def __init__(self, message: str, *, status: int, tier: str, tier_status: str, **details: Any) -> None:
        super().__init__(message, tier=tier, tier_status=tier_status, **details)
        self.status = status


class BackendError(KynseyError):
    """Any failure talking to a model server, whatever its kind."""

    status, code = 502, "backend_error"

    def __init__(self, message: str, *, host: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.host = host  # for logs and admins; users see the backend's name only


class BackendUnreachable(BackendError):
    status, code = 503, "backend_unreachable"


class ModelMissing(BackendError):
    status, code = 409, "model_missing"


class BackendBusy(BackendError):
    status, code = 503, "backend_busy"


class ModelLoadFailed(BackendError):
    status, code = 502, "model_load_failed"


class StreamBroken(BackendError):
    status, code = 502, "stream_broken"


class CircuitOpen(BackendError):
    status, code = 503, "circuit_open"


class PromptTooLong(BackendError):
    """The conversation does not fit the model's context. The model and its host are well: counted
    against them, one user's long message would pause the model for everyone."""

    status, code = 422, "prompt_too_long"


class CatalogError(Exception):
    """An invalid tier catalog: names the file, the tier and the field."""

    def __init__(self, path: str, message: str, *, tier: str | None = None, field: str | None = None):
        where = path + (f": tier '{tier}'" if tier else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")
        self.path, self.tier, self.field = path, tier, field
