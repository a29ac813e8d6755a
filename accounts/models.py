from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts import crypto, tokens
from accounts.fields import EncryptedTextField
from accounts.tokens import mask

# The sealed secrets, each shown only as its hint (accounts.tokens.mask of it), stored when sealed.
TOKEN_FIELDS = ("access_token", "session_token", "refresh_token")
# The hint of a token that no configured key opened when the hint was taken (never a mask's output).
HINT_UNDECRYPTABLE = "?"


def token_hint(value) -> str:
    """What is stored beside a sealed token to show it without decrypting: its mask."""
    if isinstance(value, crypto.Undecryptable):
        return HINT_UNDECRYPTABLE
    return mask(value)


def hint_shown(hint: str, head: bytes | None = None) -> str:
    """A stored hint as lists show it: the mask, or "cannot be decrypted".

    `head`, when given, is the start of the stored ciphertext (account_token_heads_load): a token
    sealed under a key this service no longer has shows as such, still without decrypting.
    """
    if hint == HINT_UNDECRYPTABLE or (head is not None and not crypto.header_opens(head)):
        return str(crypto.MSG_CANNOT_BE_DECRYPTED)
    return hint


def accounts_for_list(queryset):
    """Accounts as lists show them: the tokens not loaded (loading one decrypts it); each token is
    shown by its stored hint (Account.token_shown), with accounts.selectors.account_token_heads_load
    for the page's rows."""
    return queryset.defer(*TOKEN_FIELDS)


# The keyed hashes that identify an account without decrypting it: who it is, and each secret.
LOOKUP_HASH_FIELDS = (
    "identity_hash",
    "access_token_hash",
    "session_token_hash",
    "refresh_token_hash",
)


# What the hashes are taken of.
MATERIAL_FIELDS = ("email", "account_id", "access_token", "session_token", "refresh_token")


def lookup_values(*, email, account_id, access_token, session_token, refresh_token) -> tuple:
    """What each lookup hash is taken of, in LOOKUP_HASH_FIELDS order (None where absent)."""
    identity = crypto.identity_value(email=email, account_id=account_id)
    return (identity, access_token or None, session_token or None, refresh_token or None)


def lookup_hashes(**material) -> dict[str, str | None]:
    """The lookup hash columns of an account, under the newest key."""
    values = lookup_values(**material)
    return {
        field: crypto.digest(value) if value else None
        for field, value in zip(LOOKUP_HASH_FIELDS, values)
    }


class AccountStatus(models.TextChoices):
    AVAILABLE = "available", _("available")
    RESERVED = "reserved", _("reserved")
    CONSUMED = "consumed", _("consumed")
    REJECTED = "rejected", _("rejected")
    RETIRED = "retired", _("retired")


class UnusableReason(models.TextChoices):
    AT_EXPIRED = tokens.AT_EXPIRED, _("access token expired, nothing to renew it with")
    AT_SHORT_LIVED = (
        tokens.AT_SHORT_LIVED,
        _("access token about to expire, nothing to renew it with"),
    )
    NO_USABLE_TOKEN = tokens.NO_USABLE_TOKEN, _("no usable token")
    UNKNOWN_OUTCOMES = (
        "unknown_outcomes",
        _("held for staff: several imports with an unknown outcome"),
    )
    # No configured key opens its tokens: held, never sent, until staff restore the key and retry.
    KEY_MISSING = "key_missing", _("held for staff: sealed with a key this service does not have")
    UNDECRYPTABLE = "undecryptable", _("held for staff: its stored tokens fail authentication")


class BatchSource(models.TextChoices):
    ADMIN = "admin", _("admin upload")
    COMMAND = "command", _("load_accounts command")
    API = "api", _("API")


class BatchStatus(models.TextChoices):
    PREVIEWING = "previewing", _("reading")
    PENDING = "pending", _("awaiting confirmation")
    LOADING = "loading", _("loading")
    LOADED = "loaded", _("loaded")
    CHECKED = "checked", _("checked, nothing saved")
    ABORTED = "aborted", _("aborted, nothing saved")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


# A worker is reading or saving these; it stamps the batch's heartbeat as it goes.
BATCH_RUNNING_STATUSES = (BatchStatus.PREVIEWING, BatchStatus.LOADING)
# The uploaded text is kept only while a batch may still be read or loaded (a failed one can be
# run again).
BATCH_CONTENT_STATUSES = (
    BatchStatus.PREVIEWING,
    BatchStatus.PENDING,
    BatchStatus.LOADING,
    BatchStatus.FAILED,
)


class AccountBatch(models.Model):
    """One load: who loaded what, when, and what became of its lines.

    An admin or API upload waits here, encrypted, while the worker reads it and between preview
    and confirmation, so the secrets are never sent back to the browser; the text is dropped once
    the batch is loaded, checked or cancelled. While a worker reads or saves it, the batch carries
    its progress (lines read, counts so far) and a heartbeat, so a batch whose worker died is
    told apart from a slow one (`reconcile` marks it failed; it can be run again).
    """

    label = models.CharField(_("label"), max_length=100)
    # Who sold these accounts: staff compare suppliers by how long their accounts last.
    supplier = models.CharField(_("supplier"), max_length=100, blank=True, db_index=True)
    source = models.CharField(_("source"), max_length=16, choices=BatchSource.choices)
    status = models.CharField(_("status"), max_length=16, choices=BatchStatus.choices)
    filename = models.CharField(_("file name"), max_length=255, blank=True)
    loaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("loaded by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    duplicate_count = models.PositiveIntegerField(_("duplicates"), default=0)
    invalid_count = models.PositiveIntegerField(_("invalid"), default=0)
    flagged_count = models.PositiveIntegerField(_("flagged unusable"), default=0)
    # Lines whose chunk the database refused (the batch then failed; they can be loaded again).
    failed_count = models.PositiveIntegerField(_("not saved after a database error"), default=0)

    # What was asked for. A load is confirmed by staff after the preview, or at once (API).
    dry_run = models.BooleanField(_("check only"), default=False)
    strict = models.BooleanField(_("all or nothing"), default=False)
    confirmed_at = models.DateTimeField(_("confirmed at"), null=True, blank=True)
    # The uploader's language: the worker writes the lines' reasons in it.
    language = models.CharField(_("language"), max_length=16, blank=True)

    # Progress of the worker, and its heartbeat.
    total_lines = models.PositiveIntegerField(_("lines"), default=0)
    lines_read = models.PositiveIntegerField(_("lines read"), default=0)
    progress_at = models.DateTimeField(_("last progress"), null=True, blank=True)
    worker_token = models.UUIDField(null=True, blank=True, editable=False)
    error = models.TextField(_("error"), blank=True)
    # What the preview or result page shows: the first problem lines in detail (secrets masked).
    detail = models.JSONField(_("detail"), default=dict, blank=True, editable=False)

    class Meta:
        verbose_name = _("batch")
        verbose_name_plural = _("batches")
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(source__in=BatchSource.values), name="batch_source_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=BatchStatus.values), name="batch_status_valid"
            ),
        ]

    def __str__(self):
        # The label with the time of the load, unless the label holds its date already: a pasted
        # upload's default label is its time, and the command's the file name and the date.
        if not self.created_at:
            return self.label
        created = timezone.localtime(self.created_at)
        if f"{created:%Y-%m-%d}" in self.label:
            return self.label
        return f"{self.label} ({created:%Y-%m-%d %H:%M})"

    @property
    def content(self) -> str | None:
        """The uploaded text while the batch keeps it (BATCH_CONTENT_STATUSES), else None: read
        (and decrypted) from its BatchUpload pieces on every access."""
        pieces = list(
            BatchUpload.objects.filter(batch_id=self.pk).order_by("seq").values_list("content")
        )
        return "".join(piece for (piece,) in pieces) if pieces else None

    @property
    def has_upload(self) -> bool:
        """Whether the uploaded text is still kept, without reading it."""
        return self.pk is not None and BatchUpload.objects.filter(batch_id=self.pk).exists()


class BatchUpload(models.Model):
    """A piece of an upload's text (whole lines, about UPLOAD_PIECE_CHARS), encrypted, kept for as
    long as its batch may still be read or loaded (BATCH_CONTENT_STATUSES): every service that
    moves a batch out of those statuses deletes them in the same transaction.

    Apart from the batch row because the worker rewrites that row after every chunk (its
    progress), and SQLite rewrites a whole row on any update: with the text in it, each progress
    stamp of a 20 MB upload wrote 20 MB (70 ms), and of a 400 MB one, 400 MB. In pieces so the
    worker reads it as it goes: decrypting 80 MB in one piece took 0.6 s before the first line.
    """

    batch = models.ForeignKey(AccountBatch, on_delete=models.CASCADE, related_name="upload")
    seq = models.PositiveIntegerField()
    content = EncryptedTextField(_("uploaded text"))

    class Meta:
        verbose_name = _("uploaded text")
        verbose_name_plural = _("uploaded texts")
        constraints = [
            models.UniqueConstraint(fields=["batch", "seq"], name="batch_upload_piece_unique")
        ]

    def __str__(self):
        return f"{self.batch_id}/{self.seq}"


UPLOAD_PIECE_CHARS = 1024 * 1024


def upload_pieces(content: str) -> list[str]:
    """`content` cut into pieces of about UPLOAD_PIECE_CHARS, each ending after a "\n" (so no
    "\r\n" is split and the lines, and their numbers, are those of the whole text); joined they
    are `content` again."""
    pieces, start = [], 0
    while start < len(content):
        end = content.find("\n", start + UPLOAD_PIECE_CHARS - 1)
        end = len(content) if end == -1 else end + 1
        pieces.append(content[start:end])
        start = end
    return pieces


class BatchProblemChunk(models.Model):
    """A piece of a batch's problem list (every line not saved, or saved with a warning) as
    zlib-compressed CSV: the worker writes it as it goes, the admin streams it back as a download.
    Secret-free: line number, outcome, email if one was read, reasons (tokens masked)."""

    batch = models.ForeignKey(AccountBatch, on_delete=models.CASCADE, related_name="problem_chunks")
    seq = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "seq"], name="batch_problem_chunk_unique")
        ]

    def __str__(self):
        return f"{self.batch_id}/{self.seq}"


class Account(models.Model):
    """One spare ChatGPT Team login waiting in the pool.

    Secrets are encrypted; each has a keyed lookup hash so duplicates are found without
    decrypting the pool. The reservation lease lets a run that died be recovered.
    """

    email = models.CharField(_("email"), max_length=254, blank=True, db_index=True)
    access_token = EncryptedTextField(_("access token"), null=True)
    session_token = EncryptedTextField(_("session token"), null=True)
    refresh_token = EncryptedTextField(_("refresh token"), null=True)
    # Each token's mask, stored when it is sealed: list pages, the API and exports show these and
    # never decrypt (a page of 100 accounts used to open 300 ciphertexts).
    access_token_hint = models.CharField(max_length=5, blank=True, default="", editable=False)
    session_token_hint = models.CharField(max_length=5, blank=True, default="", editable=False)
    refresh_token_hint = models.CharField(max_length=5, blank=True, default="", editable=False)
    client_id = models.CharField(_("client id"), max_length=200, blank=True)
    account_id = models.CharField(_("account id"), max_length=64, blank=True)

    # NULL, not "", when the line has no such value: the unique constraints below then allow any
    # number of accounts without it (NULLs are never equal), while two equal hashes clash.
    identity_hash = models.CharField(max_length=64, null=True, editable=False)  # noqa: DJ001
    access_token_hash = models.CharField(max_length=64, null=True, editable=False)  # noqa: DJ001
    session_token_hash = models.CharField(max_length=64, null=True, editable=False)  # noqa: DJ001
    refresh_token_hash = models.CharField(max_length=64, null=True, editable=False)  # noqa: DJ001

    at_email = models.CharField(_("email in the access token"), max_length=254, blank=True)
    at_expires_at = models.DateTimeField(_("access token expires"), null=True, blank=True)
    usable = models.BooleanField(_("usable"), default=True)
    unusable_reason = models.CharField(
        _("why unusable"), max_length=32, blank=True, choices=UnusableReason.choices
    )

    status = models.CharField(
        _("status"), max_length=16, choices=AccountStatus.choices, default=AccountStatus.AVAILABLE
    )
    batch = models.ForeignKey(
        AccountBatch, verbose_name=_("batch"), on_delete=models.PROTECT, related_name="accounts"
    )
    created_at = models.DateTimeField(_("loaded at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    attempts = models.PositiveIntegerField(_("import attempts"), default=0)
    # Attempts whose outcome is unknown (timeout, dropped connection, 5xx): the account may be in
    # the manager already, so it is re-sent (not counted as new stock) until an answer settles it.
    unknown_attempts = models.PositiveIntegerField(_("attempts with unknown outcome"), default=0)
    retry_after = models.DateTimeField(_("retry after"), null=True, blank=True, editable=False)
    last_error = models.TextField(_("last error"), blank=True)
    # last_error, as a message code and its parameters, shown in the reader's language (poolsite.messages);
    # NULL for rows written before codes were kept, which show last_error as stored.
    last_error_msg = models.JSONField(null=True, blank=True, editable=False)
    lease_id = models.UUIDField(_("lease"), null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(
        _("lease expires"), null=True, blank=True, editable=False
    )
    consumed_at = models.DateTimeField(_("consumed at"), null=True, blank=True, editable=False)
    notes = models.TextField(_("notes"), blank=True)

    class Meta:
        verbose_name = _("account")
        verbose_name_plural = _("accounts")
        ordering = ["-id"]
        permissions = [
            ("requeue_account", _("Can edit, requeue, retry and release accounts")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=AccountStatus.values), name="account_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(usable=True, unusable_reason="")
                | Q(usable=False, unusable_reason__in=UnusableReason.values),
                name="account_unusable_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(access_token__isnull=False)
                | Q(session_token__isnull=False)
                | Q(refresh_token__isnull=False),
                name="account_has_token",
            ),
            # A reservation without a lease could never be recovered; a lease outside one is stale.
            models.CheckConstraint(
                condition=(
                    Q(
                        status=AccountStatus.RESERVED,
                        lease_id__isnull=False,
                        lease_expires_at__isnull=False,
                    )
                    | (
                        ~Q(status=AccountStatus.RESERVED)
                        & Q(lease_id__isnull=True, lease_expires_at__isnull=True)
                    )
                ),
                name="account_reserved_has_lease",
            ),
            models.CheckConstraint(
                condition=Q(status=AccountStatus.CONSUMED, consumed_at__isnull=False)
                | (~Q(status=AccountStatus.CONSUMED) & Q(consumed_at__isnull=True)),
                name="account_consumed_has_time",
            ),
            models.UniqueConstraint(fields=["identity_hash"], name="account_identity_unique"),
            models.UniqueConstraint(fields=["access_token_hash"], name="account_at_unique"),
            models.UniqueConstraint(fields=["session_token_hash"], name="account_st_unique"),
            models.UniqueConstraint(fields=["refresh_token_hash"], name="account_rt_unique"),
        ]
        indexes = [
            # "The oldest N usable available accounts" is a range scan of this small index.
            models.Index(
                fields=["id"],
                condition=Q(status=AccountStatus.AVAILABLE, usable=True, unknown_attempts=0),
                name="account_pick_idx",
            ),
            # Accounts whose last import had an unknown outcome, to re-send when due.
            models.Index(
                fields=["retry_after"],
                condition=Q(status=AccountStatus.AVAILABLE, unknown_attempts__gt=0),
                name="account_unresolved_idx",
            ),
            # Counts per state and usable/flagged: an index-only grouped scan. It also serves the
            # status-filtered admin pages (the rare states; the common ones walk the primary key),
            # so no (status, id) index taxes every insert of a bulk load.
            models.Index(fields=["status", "usable"], name="account_status_usable_idx"),
            # The dashboard's held and flagged accounts by reason: the few unusable available
            # rows, read from this index alone. SQLite cannot range-scan the index above for
            # NOT usable, and read 200,000 available rows for 9,902 flagged ones (588 ms at a
            # million accounts, bench-admin).
            models.Index(
                fields=["unusable_reason"],
                condition=Q(status="available", usable=False),
                name="account_unusable_idx",
            ),
            # Consumption per day, for the dashboard and exports.
            models.Index(
                fields=["consumed_at"],
                condition=Q(status=AccountStatus.CONSUMED),
                name="account_consumed_idx",
            ),
            # Leases to recover.
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status=AccountStatus.RESERVED),
                name="account_lease_idx",
            ),
        ]

    def __str__(self):
        hint = self.access_token_hint or self.session_token_hint or self.refresh_token_hint
        return self.email or f"#{self.pk} {hint_shown(hint)}"

    def save(self, *args, update_fields=None, **kwargs):
        # Any write through the ORM keeps each loaded token's hint beside it (the bulk loader and
        # requeue, which write with SQL / update(), set the hints themselves).
        deferred = self.get_deferred_fields()
        extra = []
        for name in TOKEN_FIELDS:
            if name in deferred or (update_fields is not None and name not in update_fields):
                continue
            setattr(self, f"{name}_hint", token_hint(getattr(self, name)))
            extra.append(f"{name}_hint")
        if update_fields is not None:
            update_fields = [*update_fields, *extra]
        super().save(*args, update_fields=update_fields, **kwargs)

    def token_shown(self, name: str) -> str:
        """A token as lists show it, from its stored hint: never decrypted (see accounts_for_list)."""
        return hint_shown(getattr(self, f"{name}_hint"), getattr(self, f"{name}_head", None))


class ConsumptionDay(models.Model):
    """Accounts consumed on one day (in settings.TIME_ZONE): the rollup every consumption figure reads.

    Counted in the same transaction as each consumption (accounts.services.account_settle_consumed),
    so the dashboard, /api/stats/, the runway and the alerts read 30 small rows instead of grouping
    every consumed account by a date cast (which SQLite runs as a Python function, once per row).
    """

    day = models.DateField(_("day"), primary_key=True)
    consumed = models.PositiveIntegerField(_("accounts consumed"), default=0)

    class Meta:
        verbose_name = _("consumption per day")
        verbose_name_plural = _("consumption per day")
        ordering = ["-day"]
        constraints = [
            models.CheckConstraint(
                condition=Q(consumed__gte=0), name="consumption_day_not_negative"
            )
        ]

    def __str__(self):
        return f"{self.day}: {self.consumed}"
