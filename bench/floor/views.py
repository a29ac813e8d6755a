"""The bare floor: validate the webhook's JSON and insert one row into the webhook events table."""

import json

from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

INSERT = (
    "INSERT INTO webhooks_webhookevent (received_at, status, key_ok, current_seats, threshold, message, payload,"
    " refusal, remote_addr, calls, during_run) VALUES (%s, 'refused', %s, %s, %s, %s, %s, 'bench floor', NULL, 1, %s)"
)


def floor(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    try:
        body = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "not JSON"}, status=400)
    if not isinstance(body, dict) or body.get("event") != "low_stock":
        return JsonResponse({"error": "invalid"}, status=400)
    seats, threshold = body.get("current_seats"), body.get("threshold")
    if not isinstance(seats, int) or not isinstance(threshold, int):
        return JsonResponse({"error": "invalid"}, status=400)
    message = body.get("message") or ""
    with connection.cursor() as cursor:
        received = connection.ops.adapt_datetimefield_value(timezone.now())
        cursor.execute(
            INSERT, [received, True, seats, threshold, message, request.body.decode(), False]
        )
    return JsonResponse({"ok": True}, status=202)
