from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from webhooks.models import EventStatus, WebhookEvent


@csrf_exempt
@require_POST
def in_app_floor(request):
    """The in-app floor: this project's whole middleware stack, one ORM INSERT, answer 202."""
    WebhookEvent.objects.create(status=EventStatus.REFUSED, key_ok=True, refusal="bench floor")
    return JsonResponse({"ok": True}, status=202)
