"""/api/stats/, /api/events/, /api/runs/, /api/attempts/: replenishment over REST, read-only but
for the manual push. Thin: the figures are webhooks.selectors, the push is webhooks.services.
"""

from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import AccountStatus
from poolsite.pagination import MAX_ID, IdCursorPagination
from poolsite.parsers import JSONParser
from poolsite.permissions import StaffCanView, staff_with
from poolsite.search import email_prefix_q
from poolsite.text import redact
from webhooks import services
from webhooks.models import (
    AttemptOutcome,
    EventStatus,
    ImportAttempt,
    ImportMode,
    ReplenishmentRun,
    RunStatus,
    RunTrigger,
    WebhookEvent,
)
from webhooks.selectors import dashboard_stats
from webhooks.services import (
    MAX_PUSH_ACCOUNTS,
    MSG_PUSH_BUSY,
)  # the push's rules, and what tests read here

# --- Stats --------------------------------------------------------------------------------------


class StatsSerializer(serializers.Serializer):
    """What dashboard_stats returns; documents the answer, which is passed through as it is."""

    counts = inline_serializer(
        "AccountCounts",
        fields={value: serializers.IntegerField() for value in AccountStatus.values},
    )
    available_usable = serializers.IntegerField()
    available_flagged_unusable = serializers.IntegerField()
    seats_in_stock = serializers.IntegerField()
    consumption_per_day = inline_serializer(
        "ConsumptionDay",
        fields={"day": serializers.DateField(), "consumed": serializers.IntegerField()},
        many=True,
    )
    consumed_last_7_days = serializers.IntegerField()
    consumed_per_day = serializers.FloatField(
        help_text=_("Accounts consumed a day, on average over the last 7 days: the runway's rate.")
    )
    runway_days = serializers.FloatField(
        allow_null=True, help_text=_("Null when nothing was consumed in the last 7 days.")
    )


class StatsView(APIView):
    """Pool counts, seats in stock, consumption per day and runway: the dashboard's figures."""

    # The dashboard shows these figures only to staff who may view the pool's accounts.
    permission_classes = [staff_with("accounts.view_account")]

    @extend_schema(responses=StatsSerializer)
    def get(self, request):
        return Response(dashboard_stats(now=timezone.now()))


# --- History ------------------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class RedactedTextField(serializers.ReadOnlyField):
    """Text as the manager sent it, stored as received: anything token-shaped is cut on the way out."""

    def to_representation(self, value):
        return redact(value)


class TimeRangeFilterSerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False, help_text=_("From this time on (inclusive)."))
    until = serializers.DateTimeField(required=False, help_text=_("Before this time (exclusive)."))


class EventFilterSerializer(TimeRangeFilterSerializer):
    status = serializers.ChoiceField(choices=EventStatus.choices, required=False)
    key_ok = serializers.BooleanField(required=False)


class RunFilterSerializer(TimeRangeFilterSerializer):
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    trigger = serializers.ChoiceField(choices=RunTrigger.choices, required=False)


class AttemptFilterSerializer(TimeRangeFilterSerializer):
    outcome = serializers.ChoiceField(choices=AttemptOutcome.choices, required=False)
    mode = serializers.ChoiceField(choices=ImportMode.choices, required=False)
    sent = serializers.BooleanField(required=False)
    account = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, help_text=_("Account id.")
    )
    run = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, help_text=_("Run id.")
    )
    email = serializers.CharField(
        max_length=254,
        required=False,
        allow_blank=True,
        help_text=_("An email address or its beginning."),
    )


# Newest first by the indexed time column the date range filters on, so one index serves both.
class ReceivedAtCursorPagination(IdCursorPagination):
    ordering = "-received_at"


class CreatedAtCursorPagination(IdCursorPagination):
    ordering = "-created_at"


class HistoryViewSet(viewsets.ReadOnlyModelViewSet):
    """A read-only history list: validated filters, a date range on `time_field`, cursor pages."""

    permission_classes = [StaffCanView]
    lookup_value_regex = "[0-9]{1,18}"  # larger would overflow a 64-bit key (a 500 on SQLite)
    filter_serializer_class: type[TimeRangeFilterSerializer]
    time_field: str
    # Filter name → lookup, for the filters that are plain equality.
    equal_filters: dict[str, str] = {}

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        filters = self.filter_serializer_class(data=self.request.query_params, partial=True)
        filters.is_valid(raise_exception=True)
        given = filters.validated_data
        if "since" in given:
            queryset = queryset.filter(**{f"{self.time_field}__gte": given["since"]})
        if "until" in given:
            queryset = queryset.filter(**{f"{self.time_field}__lt": given["until"]})
        equal = {
            lookup: given[name] for name, lookup in self.equal_filters.items() if name in given
        }
        return self.filter_more(queryset.filter(**equal), given)

    def filter_more(self, queryset, given: dict):
        return queryset


class EventSerializer(serializers.ModelSerializer):
    message = RedactedTextField()
    payload = RedactedTextField()

    class Meta:
        model = WebhookEvent
        fields = (
            "id",
            "received_at",
            "status",
            "key_ok",
            "current_seats",
            "threshold",
            "message",
            "payload",
            "refusal",
            "remote_addr",
            "run",
        )
        read_only_fields = fields


@extend_schema_view(list=extend_schema(parameters=[EventFilterSerializer]))
class EventViewSet(HistoryViewSet):
    """Every call of the low-stock webhook, accepted or refused, newest first."""

    queryset = WebhookEvent.objects.all()
    serializer_class = EventSerializer
    filter_serializer_class = EventFilterSerializer
    time_field = "received_at"
    pagination_class = ReceivedAtCursorPagination
    equal_filters = {"status": "status", "key_ok": "key_ok"}


class RunSerializer(serializers.ModelSerializer):
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ReplenishmentRun
        fields = (
            "id",
            "trigger",
            "status",
            "requested_accounts",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "need",
            "need_explained",
            "reserved",
            "consumed",
            "rejected",
            "unknown",
            "returned",
            "error",
        )
        read_only_fields = fields


class PushSerializer(serializers.Serializer):
    accounts = serializers.IntegerField(min_value=1, max_value=MAX_PUSH_ACCOUNTS)


class PushResultSerializer(serializers.Serializer):
    run = serializers.IntegerField(help_text=_("The queued run that will push them."))
    requested_accounts = serializers.IntegerField(
        help_text=_(
            "Accounts that run will push: more if it was already queued with a request of its own."
        )
    )


@extend_schema_view(list=extend_schema(parameters=[RunFilterSerializer]))
class RunViewSet(HistoryViewSet):
    """Replenishment runs, newest first: what each was asked, how the need was computed, how it ended."""

    queryset = ReplenishmentRun.objects.select_related("requested_by")
    serializer_class = RunSerializer
    filter_serializer_class = RunFilterSerializer
    # Runs are few next to attempts; ids follow creation, so the id order serves the range too.
    time_field = "created_at"
    equal_filters = {"status": "status", "trigger": "trigger"}

    @extend_schema(
        request=PushSerializer,
        responses={
            202: PushResultSerializer,
            409: OpenApiResponse(
                description=_("A run was being queued at the same moment; try again.")
            ),
        },
    )
    @action(
        detail=False,
        methods=["post"],
        permission_classes=[staff_with("webhooks.push_accounts")],
        parser_classes=[JSONParser],
    )
    def push(self, request):
        """Push N accounts to the manager now, through a manual run (not capped by the policy)."""
        given = PushSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        run = services.run_wake(
            trigger=RunTrigger.MANUAL,
            requested_accounts=given.validated_data["accounts"],
            requested_by=request.user,
        )
        if run is None:
            return Response({"detail": str(MSG_PUSH_BUSY)}, status=status.HTTP_409_CONFLICT)
        return Response(
            {"run": run.pk, "requested_accounts": run.requested_accounts},
            status=status.HTTP_202_ACCEPTED,
        )


class AttemptSerializer(serializers.ModelSerializer):
    account_email = serializers.CharField(read_only=True)

    class Meta:
        model = ImportAttempt
        fields = (
            "id",
            "created_at",
            "account",
            "account_email",
            "run",
            "mode",
            "sent",
            "http_status",
            "outcome",
            "manager_message",
            "error",
            "duration_ms",
        )
        read_only_fields = fields


@extend_schema_view(list=extend_schema(parameters=[AttemptFilterSerializer]))
class AttemptViewSet(HistoryViewSet):
    """Every import attempt, newest first. The manager's text was redacted before it was stored."""

    # The email through a join, not the account row: loading accounts would decrypt their tokens.
    queryset = ImportAttempt.objects.annotate(account_email=F("account__email"))
    serializer_class = AttemptSerializer
    filter_serializer_class = AttemptFilterSerializer
    pagination_class = CreatedAtCursorPagination
    time_field = "created_at"
    equal_filters = {
        "outcome": "outcome",
        "mode": "mode",
        "sent": "sent",
        "account": "account_id",
        "run": "run_id",
    }

    def filter_more(self, queryset, given):
        # Emails are stored lower-case; a prefix match is an index range scan, "contains" is not.
        email = given.get("email", "").strip().lower()
        return (
            queryset.filter(email_prefix_q(term=email, field="account__email"))
            if email
            else queryset
        )
