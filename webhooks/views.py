"""POST /webhooks/low-stock/: authenticate, validate, record, answer 202. No outbound calls here."""

import hmac
import json

from django.conf import settings
from django.http import JsonResponse
from django.utils.translation import gettext_noop
from django.views.decorators.csrf import csrf_exempt

from poolsite.client_ip import client_ip
from poolsite.http import declared_length
from poolsite.messages import Stored, message_define, message_store
from poolsite.parsers import json_problem, printable
from webhooks import services

MAX_BODY_BYTES = 64 * 1024
MAX_COUNT = 10**9
MAX_MESSAGE_CHARS = 2000

# The API answers in English (the manager reads it); the refusal kept on the event is shown to
# staff in their language (poolsite.messages).
ERR_METHOD = "Only POST is accepted."
ERR_KEY = message_define("webhook.key", gettext_noop("Missing or wrong X-API-Key."))
ERR_NO_KEY_CONFIGURED = message_define(
    "webhook.no_key_configured",
    gettext_noop("MANAGER_API_KEY is not set on this service: every webhook is refused."),
)
ERR_TOO_LARGE = message_define("webhook.too_large", gettext_noop("The body is larger than 64 KB."))
ERR_CONTENT_TYPE = message_define(
    "webhook.content_type",
    gettext_noop("The body must be JSON (Content-Type: application/json)."),
)
ERR_NOT_JSON = message_define("webhook.not_json", gettext_noop("The body is not valid JSON."))
ERR_DUPLICATE_KEY = message_define(
    "webhook.duplicate_key", gettext_noop("The body names the field %s twice.")
)
ERR_NOT_OBJECT = message_define(
    "webhook.not_object", gettext_noop("The body must be a JSON object.")
)
ERR_EVENT = message_define("webhook.event", gettext_noop('event must be "low_stock".'))
ERR_COUNT = message_define(
    "webhook.count", gettext_noop("%s must be a whole number from 0 to 999999999.")
)
ERR_MESSAGE = message_define(
    "webhook.message", gettext_noop("message must be text of at most 2000 characters.")
)
ERR_SURROGATE = message_define(
    "webhook.surrogate",
    gettext_noop("%s holds a lone surrogate (such as \\ud800): not valid Unicode text."),
)
# "The body" where ERR_SURROGATE names no field.
message_define("webhook.the_body", gettext_noop("The body"))


class _Invalid(Exception):
    def __init__(self, code: str, *args, field: str | None = None):
        self.refusal: Stored = message_store(code, *args)
        super().__init__(self.refusal[0])
        self.field = field


def _error(message: str, status: int, field: str | None = None) -> JsonResponse:
    body = {"error": message, **({"field": field} if field else {})}
    return JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})


def _unique_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _Invalid("webhook.duplicate_key", printable(key), field=printable(key))
        seen[key] = value
    return seen


def _count(body: dict, field: str) -> int:
    value = body.get(field)
    # bool is an int to Python, but `true` is not a seat count.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_COUNT:
        raise _Invalid("webhook.count", field, field=field)
    return value


def _validate(raw: bytes) -> dict:
    try:
        body = json.loads(raw, object_pairs_hook=_unique_keys)
    except _Invalid:
        raise
    except (ValueError, RecursionError):
        raise _Invalid("webhook.not_json") from None
    if not isinstance(body, dict):
        raise _Invalid("webhook.not_object")
    problem = json_problem(body)
    if problem:  # a lone surrogate: no database stores it (too deep a body failed to parse above)
        field = problem[1] or None
        named = field or message_store("webhook.the_body")
        raise _Invalid("webhook.surrogate", named, field=field)
    if body.get("event") != "low_stock":
        raise _Invalid("webhook.event", field="event")
    message = body.get("message", "")
    if message is None:
        message = ""
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        raise _Invalid("webhook.message", field="message")
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
        reason = message_store("webhook.no_key_configured" if not configured else "webhook.key")
        services.event_refuse(reason=reason, key_ok=False, payload="", remote_addr=remote)
        return _error(reason[0], 401)
    declared = declared_length(request)
    raw = request.read(MAX_BODY_BYTES + 1) if declared <= MAX_BODY_BYTES else b""
    if declared > MAX_BODY_BYTES or len(raw) > MAX_BODY_BYTES:
        services.event_refuse(
            reason=message_store("webhook.too_large"), key_ok=True, payload="", remote_addr=remote
        )
        return _error(ERR_TOO_LARGE, 413)
    payload = raw.decode("utf-8", errors="replace")
    try:
        if request.content_type != "application/json":
            raise _Invalid("webhook.content_type")
        data = _validate(raw)
    except _Invalid as invalid:
        services.event_refuse(
            reason=invalid.refusal, key_ok=True, payload=payload, remote_addr=remote
        )
        return _error(str(invalid), 415 if str(invalid) == ERR_CONTENT_TYPE else 400, invalid.field)
    event = services.event_receive(**data, payload=payload, remote_addr=remote)
    return JsonResponse({"event_id": event.pk, "status": event.status}, status=202)
