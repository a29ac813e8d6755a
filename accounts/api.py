"""/api/accounts/: the pool over REST. Thin: reading, loading and retiring are accounts.services.

Secrets never leave: token fields are only ever shown masked (last 4 characters).
"""

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError
from rest_framework.filters import OrderingFilter
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from accounts import services
from accounts.models import (
    BATCH_RUNNING_STATUSES,
    Account,
    AccountStatus,
    BatchSource,
    BatchStatus,
    accounts_for_list,
)
from accounts.parser import label_problem
from accounts.selectors import account_batches_of, account_token_heads_load
from accounts.services import LineOutcome
from accounts.uploads import NotText, upload_decode
from poolsite.http import declared_length
from poolsite.pagination import MAX_ID
from poolsite.parsers import JSONParser
from poolsite.permissions import StaffCanView, staff_with
from poolsite.search import email_prefix_q

MSG_EMPTY = _(
    "Nothing to load: send the account lines as a text/plain body, or as JSON with the lines in “text”."
)
MSG_TOO_BIG = _("The body is larger than %(limit)s. Load big files with `manage.py load_accounts`.")
MSG_NOT_TEXT = _("The body is not text (it contains binary data).")
MSG_NOT_UTF8 = _("The body is not UTF-8 text.")
NOT_TEXT_MESSAGES = {NotText.BINARY: MSG_NOT_TEXT, NotText.NOT_UTF8: MSG_NOT_UTF8}
MSG_STRICT_ABORTED = _("Nothing was saved: strict refuses a text with invalid lines.")

# One request retires at most this many accounts: one locked UPDATE, and an answer that lists them.
MAX_RETIRE_IDS = 1000


# --- Shared by every endpoint under /api/ -------------------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class MaskedSecretField(serializers.Field):
    """A token as its stored hint (its mask): nothing is decrypted to show it."""

    def __init__(self, *, token: str, **kwargs):
        self.token = token
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, value):
        return value.token_shown(self.token)


class PlainTextParser(BaseParser):
    """A text/plain body, read like an uploaded file: UTF-8 (a BOM is dropped), no binary."""

    media_type = "text/plain"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return upload_decode(raw=stream.read())
        except NotText as problem:
            raise ParseError(NOT_TEXT_MESSAGES[problem.kind]) from None


# --- Accounts -----------------------------------------------------------------------------------


class AccountSerializer(serializers.ModelSerializer):
    access_token_masked = MaskedSecretField(token="access_token")
    session_token_masked = MaskedSecretField(token="session_token")
    refresh_token_masked = MaskedSecretField(token="refresh_token")

    class Meta:
        model = Account
        fields = (
            "id",
            "email",
            "status",
            "usable",
            "unusable_reason",
            "batch",
            "access_token_masked",
            "session_token_masked",
            "refresh_token_masked",
            "client_id",
            "account_id",
            "at_email",
            "at_expires_at",
            "attempts",
            "unknown_attempts",
            "retry_after",
            "last_error",
            "lease_expires_at",
            "consumed_at",
            "created_at",
            "updated_at",
            "notes",
        )
        read_only_fields = fields


class AccountFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=AccountStatus.choices, required=False)
    usable = serializers.BooleanField(required=False)
    batch = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, help_text=_("Batch id.")
    )
    email = serializers.CharField(
        max_length=254,
        required=False,
        allow_blank=True,
        help_text=_("An email address or its beginning."),
    )


class BulkLoadSerializer(serializers.Serializer):
    text = serializers.CharField(
        trim_whitespace=False,
        allow_blank=True,
        error_messages={"required": MSG_EMPTY},
        help_text=_("One account per line, in any format the admin's load page takes."),
    )
    label = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    supplier = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text=_("Who sold these accounts."),
    )
    dry_run = serializers.BooleanField(
        required=False, default=False, help_text=_("Check every line, save nothing.")
    )
    strict = serializers.BooleanField(
        required=False, default=False, help_text=_("Save nothing unless every line is valid.")
    )

    def validate_label(self, label):
        problem = label_problem(label)
        if problem is not None:
            raise serializers.ValidationError(str(problem.message))
        return label

    def validate_supplier(self, supplier):
        return self.validate_label(supplier.strip())

    def validate_text(self, text):
        if not text.strip():
            raise serializers.ValidationError(MSG_EMPTY)
        return text


class LoadLineSerializer(serializers.Serializer):
    line = serializers.IntegerField(source="lineno")
    outcome = serializers.ChoiceField(
        choices=[
            LineOutcome.CREATED,
            LineOutcome.DUPLICATE,
            LineOutcome.INVALID,
            LineOutcome.FAILED,
        ]
    )
    messages = serializers.ListField(child=serializers.CharField())


class BulkAcceptedSerializer(serializers.Serializer):
    batch = serializers.IntegerField(help_text=_("Batch id."))
    status = serializers.CharField(help_text=_("The batch's state (see the status endpoint)."))
    status_url = serializers.URLField(help_text=_("GET it for the batch's state and counts."))


class BatchStatusSerializer(serializers.Serializer):
    batch = serializers.IntegerField(source="pk")
    label = serializers.CharField()
    status = serializers.CharField(
        help_text=_(
            "previewing (the worker reads it), pending (awaiting confirmation), loading, loaded, "
            "checked (dry run), aborted (strict, invalid lines), failed, cancelled."
        )
    )
    done = serializers.BooleanField(help_text=_("False while the worker reads or saves it."))
    detail = serializers.CharField(required=False, help_text=_("Why nothing was saved (strict)."))
    dry_run = serializers.BooleanField()
    strict = serializers.BooleanField()
    total_lines = serializers.IntegerField()
    lines_read = serializers.IntegerField()
    created = serializers.IntegerField(
        source="created_count", help_text=_("Saved, or would be saved (dry run, or while reading).")
    )
    duplicates = serializers.IntegerField(source="duplicate_count")
    invalid = serializers.IntegerField(source="invalid_count")
    flagged_unusable = serializers.IntegerField(source="flagged_count")
    failed = serializers.IntegerField(
        source="failed_count", help_text=_("Refused by the database, not saved.")
    )
    error = serializers.CharField()
    lines = LoadLineSerializer(
        many=True,
        help_text=_(
            "The first 1,000 lines not saved or saved with a warning, once the worker is done."
        ),
    )
    more_lines = serializers.IntegerField(help_text=_("How many more such lines there are."))


class RetireSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        allow_empty=False,
        max_length=MAX_RETIRE_IDS,
    )


class RetireResultSerializer(serializers.Serializer):
    retired = serializers.ListField(child=serializers.IntegerField())
    skipped = serializers.ListField(
        child=serializers.IntegerField(),
        help_text=_(
            "Not retired: only available or rejected accounts can be (or there is no such account)."
        ),
    )


@extend_schema_view(
    list=extend_schema(parameters=[AccountFilterSerializer]),
)
class AccountViewSet(viewsets.ReadOnlyModelViewSet):
    """Accounts in the pool, newest first. Tokens are shown masked, never in full."""

    queryset = accounts_for_list(
        Account.objects.all()
    )  # tokens shown by their hints, never decrypted
    serializer_class = AccountSerializer
    permission_classes = [StaffCanView]
    filter_backends = [OrderingFilter]
    ordering_fields = ["id"]
    ordering = ["-id"]
    lookup_value_regex = "[0-9]{1,18}"  # larger would overflow a 64-bit key (a 500 on SQLite)

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        return page if page is None else account_token_heads_load(accounts=list(page))

    def get_object(self):
        return account_token_heads_load(accounts=[super().get_object()])[0]

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        filters = AccountFilterSerializer(data=self.request.query_params, partial=True)
        filters.is_valid(raise_exception=True)
        given = filters.validated_data
        if "status" in given:
            queryset = queryset.filter(status=given["status"])
        if "usable" in given:
            queryset = queryset.filter(usable=given["usable"])
        if "batch" in given:
            queryset = queryset.filter(batch_id=given["batch"])
        # Emails are stored lower-case; a prefix match is an index range scan, "contains" is not.
        email = given.get("email", "").strip().lower()
        if email:
            queryset = queryset.filter(email_prefix_q(term=email))
        return queryset

    @extend_schema(
        request={"application/json": BulkLoadSerializer, "text/plain": OpenApiTypes.STR},
        responses={
            202: OpenApiResponse(
                BulkAcceptedSerializer, _("Stored; the worker reads and loads it.")
            ),
            400: OpenApiResponse(
                description=_("Empty, oversized or unreadable body, or a bad label.")
            ),
        },
        examples=[
            OpenApiExample(
                "JSON",
                value={
                    "text": "a@example.com----eyJ…\nb@example.com|eyJ…",
                    "label": "november",
                    "dry_run": True,
                },
                request_only=True,
            )
        ],
        description=_(
            "Load accounts through the same parser and loader as the admin. The text is stored "
            "(encrypted) and the background worker reads and saves it: the answer is 202 with the "
            "batch's id and a status URL to poll. With text/plain, label, dry_run and strict are "
            "query parameters. The body may be at most POOL_UPLOAD_MAX_BYTES."
        ),
    )
    @action(
        detail=False,
        methods=["post"],
        permission_classes=[staff_with("accounts.add_accountbatch")],
        parser_classes=[JSONParser, PlainTextParser],
    )
    def bulk(self, request):
        given = BulkLoadSerializer(data=_bulk_input(request))
        given.is_valid(raise_exception=True)
        data = given.validated_data
        batch = services.account_batch_stage(
            content=data["text"],
            label=data["label"] or f"API {timezone.localtime():%Y-%m-%d %H:%M}",
            supplier=data["supplier"],
            source=BatchSource.API,
            user=request.user,
            confirmed=True,
            dry_run=data["dry_run"],
            strict=data["strict"],
            language=translation.get_language() or "",
        )
        url = request.build_absolute_uri(
            reverse("api-account-batch", kwargs={"batch_id": batch.pk})
        )
        body = {"batch": batch.pk, "status": batch.status, "status_url": url}
        return Response(
            BulkAcceptedSerializer(body).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": url},
        )

    @extend_schema(
        responses={
            200: BatchStatusSerializer,
            404: OpenApiResponse(description=_("No such batch of yours.")),
        },
        description=_(
            "A load's state and counts, updated by the worker as it goes. Only its uploader sees it."
        ),
    )
    @action(
        detail=False,
        methods=["get"],
        url_path=r"batches/(?P<batch_id>[0-9]{1,18})",
        url_name="batch",
        permission_classes=[staff_with("accounts.add_accountbatch")],
    )
    def batch(self, request, batch_id):
        batch = get_object_or_404(account_batches_of(user=request.user), pk=int(batch_id))
        return Response(_batch_status(batch))

    @extend_schema(request=RetireSerializer, responses=RetireResultSerializer)
    @action(
        detail=False,
        methods=["post"],
        permission_classes=[staff_with("accounts.change_account")],
        parser_classes=[JSONParser],
    )
    def retire(self, request):
        """Retire accounts for good. Only available or rejected accounts can be; the rest are skipped."""
        given = RetireSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        ids = set(given.validated_data["ids"])
        retired = {
            account.pk for account in services.account_retire(account_ids=ids, by=request.user)
        }
        return Response({"retired": sorted(retired), "skipped": sorted(ids - retired)})


def _bulk_input(request) -> dict:
    """The bulk request as one dict, whichever body it came in; too big a body is refused unread."""
    limit = settings.POOL_UPLOAD_MAX_BYTES
    # Refused unread (poolsite.http.declared_length).
    if declared_length(request) > limit:
        raise ParseError(MSG_TOO_BIG % {"limit": filesizeformat(limit)})
    if not isinstance(request.data, str):
        return request.data
    options = ("label", "supplier", "dry_run", "strict")
    return {
        "text": request.data,
        **{key: request.query_params[key] for key in options if key in request.query_params},
    }


def _batch_status(batch) -> dict:
    done = batch.status not in BATCH_RUNNING_STATUSES
    detail = batch.detail or {}
    lines = [
        row
        for row in detail.get("rows", [])
        if row["outcome"] != LineOutcome.CREATED or row["messages"]
    ]
    body = {
        "pk": batch.pk,
        "label": batch.label,
        "status": batch.status,
        "done": done,
        "dry_run": batch.dry_run,
        "strict": batch.strict,
        "total_lines": batch.total_lines,
        "lines_read": batch.lines_read,
        "created_count": batch.created_count,
        "duplicate_count": batch.duplicate_count,
        "invalid_count": batch.invalid_count,
        "flagged_count": batch.flagged_count,
        "failed_count": batch.failed_count,
        "error": batch.error,
        "lines": lines,
        "more_lines": detail.get("hidden_problems", 0),
    }
    if batch.status == BatchStatus.ABORTED:
        body["detail"] = MSG_STRICT_ABORTED
    return BatchStatusSerializer(body).data
