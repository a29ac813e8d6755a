"""POST /webhooks/low-stock/: authenticate, validate, record, answer 202. No outbound calls here."""

import hmac
import json

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from poolsite.client_ip import client_ip
from poolsite.http import declared_length
from poolsite.parsers import json_problem, printable
from webhooks import services

MAX_BODY_BYTES = 64 * 1024
MAX_COUNT = 10**9
MAX_MESSAGE_CHARS = 2000

ERR_METHOD = "Only POST is accepted."
ERR_KEY = "Missing or wrong X-API-Key."
ERR_NO_KEY_CONFIGURED = "MANAGER_API_KEY is not set on this service: every webhook is refused."
ERR_TOO_LARGE = "The body is larger than 64 KB."
ERR_CONTENT_TYPE = "The body must be JSON (Content-Type: application/json)."
ERR_NOT_JSON = "The body is not valid JSON."
ERR_DUPLICATE_KEY = "The body names the field %s twice."
ERR_NOT_OBJECT = "The body must be a JSON object."
ERR_EVENT = 'event must be "low_stock".'
ERR_COUNT = "%s must be a whole number from 0 to 999999999."
ERR_MESSAGE = "message must be text of at most 2000 characters."
ERR_SURROGATE = "%s holds a lone surrogate (such as \\ud800): not valid Unicode text."


class _Invalid(Exception):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _error(message: str, status: int, field: str | None = None) -> JsonResponse:
    body = {"error": message, **({"field": field} if field else {})}
    return JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})


def _unique_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _Invalid(ERR_DUPLICATE_KEY % printable(key), printable(key))
        seen[key] = value
    return seen


def _count(body: dict, field: str) -> int:
    value = body.get(field)
    # bool is an int to Python, but `true` is not a seat count.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_COUNT:
        raise _Invalid(ERR_COUNT % field, field)
    return value


def _validate(raw: bytes) -> dict:
    try:
        body = json.loads(raw, object_pairs_hook=_unique_keys)
    except _Invalid:
        raise
    except (ValueError, RecursionError):
        raise _Invalid(ERR_NOT_JSON) from None
    if not isinstance(body, dict):
        raise _Invalid(ERR_NOT_OBJECT)
    problem = json_problem(body)
    if problem:  # a lone surrogate: no database stores it (too deep a body failed to parse above)
        field = problem[1] or None
        raise _Invalid(ERR_SURROGATE % (field or "The body"), field)
    if body.get("event") != "low_stock":
        raise _Invalid(ERR_EVENT, "event")
    message = body.get("message", "")
    if message is None:
        message = ""
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        raise _Invalid(ERR_MESSAGE, "message")
    return {
        "current_seats": _count(body, "current_seats"),
        "threshold": _count(body, "threshold"),
        "message": message,
    }


@csrf_exempt
def low_stock(request):
    if request.method != "POST":
        response = _error(ERR_METHOD, 405)
        response["Allow"] = "POST"
        return response
    remote = client_ip(request)  # behind the TLS proxy, from X-Forwarded-For
    configured = settings.MANAGER_API_KEY
    given = request.headers.get("X-API-Key", "")
    # compare_digest: the time taken must not tell how much of a guessed key was right.
    if not configured or not hmac.compare_digest(given.encode(), configured.encode()):
        reason = ERR_NO_KEY_CONFIGURED if not configured else ERR_KEY
        services.event_refuse(reason=reason, key_ok=False, payload="", remote_addr=remote)
        return _error(reason, 401)
    declared = declared_length(request)
    raw = request.read(MAX_BODY_BYTES + 1) if declared <= MAX_BODY_BYTES else b""
    if declared > MAX_BODY_BYTES or len(raw) > MAX_BODY_BYTES:
        services.event_refuse(reason=ERR_TOO_LARGE, key_ok=True, payload="", remote_addr=remote)
        return _error(ERR_TOO_LARGE, 413)
    payload = raw.decode("utf-8", errors="replace")
    try:
        if request.content_type != "application/json":
            raise _Invalid(ERR_CONTENT_TYPE)
        data = _validate(raw)
    except _Invalid as invalid:
        services.event_refuse(reason=str(invalid), key_ok=True, payload=payload, remote_addr=remote)
        return _error(str(invalid), 415 if str(invalid) == ERR_CONTENT_TYPE else 400, invalid.field)
    event = services.event_receive(**data, payload=payload, remote_addr=remote)
    return JsonResponse({"event_id": event.pk, "status": event.status}, status=202)
