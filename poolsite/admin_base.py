"""Admin bases every app's admin shares: read-only history lists that stay fast at a million
rows, single-row settings pages, and searching by the start of an email address."""

from datetime import date

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Max, Min
from django.shortcuts import redirect
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.text import Truncator, capfirst
from django.utils.translation import gettext_lazy as _

from poolsite.messages import message_render_field
from poolsite.search import email_prefix_q, search_term

MSG_SEARCH_EMAIL_START = _(
    "Matches the start of an email address: type the whole address or its beginning "
    "(“ann” finds ann@example.com, not joanna@example.com)."
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """For history: rows are written by the services only; the admin shows them."""

    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def stored_message_display(field: str, description, *, cut: int | None = None):
    """An admin column or read-only field showing the stored text `field` in the reader's
    language (poolsite.messages), cut to `cut` characters in lists."""

    @admin.display(description=description)
    def shown(self, obj):
        text = message_render_field(obj, field)
        return (Truncator(text).chars(cut) if cut else text) or "—"

    return shown


class StoredMessagesAdmin:
    """Detail pages show each stored text of `stored_messages` ({column: display method name})
    through its display method, in the reader's language, in the column's place."""

    stored_messages: dict[str, str] = {}

    def get_fields(self, request, obj=None):
        fields = [self.stored_messages.get(name, name) for name in super().get_fields(request, obj)]
        return list(dict.fromkeys(fields))

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), *self.stored_messages.values()]


class CappedCountPaginator(Paginator):
    """Counting a million rows on every page view is what makes big admin lists slow.

    Counting stops at CAP; past it the list says "more than CAP" and filters or search narrow it.
    """

    CAP = 10_000

    @cached_property
    def count(self):
        return self.object_list[: self.CAP + 1].count()

    @property
    def capped(self):
        return self.count > self.CAP


class HistoryAdmin(ReadOnlyAdmin):
    """A history list that stays fast at a million rows.

    Counting stops at a cap, facet counts are off, and the date drill-down lists the periods
    between the first and the last row in view (two index probes) instead of the periods that
    have rows, which Django finds with SELECT DISTINCT over every row in view (0.4 s a million).
    """

    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            context["date_drilldown"] = _date_drilldown(context["cl"])
        return response


def _date_drilldown(cl) -> dict:
    """What admin/date_hierarchy.html shows, from the first and last row of the list."""
    field = cl.date_hierarchy
    year_field, month_field, day_field = f"{field}__year", f"{field}__month", f"{field}__day"
    # Numbers, or the ChangeList would have refused them already.
    year, month, day = (
        int(cl.params[f]) if f in cl.params else None for f in (year_field, month_field, day_field)
    )

    def link(filters):
        return cl.get_query_string(filters, [f"{field}__"])

    if year and month and day:
        shown = date(year, month, day)
        return {
            "show": True,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": capfirst(formats.date_format(shown, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(shown, "MONTH_DAY_FORMAT"))}],
        }
    # Two index probes: SQLite answers MIN and MAX together by scanning the whole index (280 ms
    # at a million attempts, bench-admin), each alone from one end of it.
    in_view = cl.queryset.order_by()
    bounds = {
        "first": in_view.aggregate(first=Min(field))["first"],
        "last": in_view.aggregate(last=Max(field))["last"],
    }
    if bounds["first"] is None:
        return {
            "show": bool(year),
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [],
        }
    first, last = (timezone.localtime(bounds[k]) for k in ("first", "last"))
    if not year and first.year == last.year:
        year = first.year
        if first.month == last.month:
            month = first.month
    if year and month:
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: n}),
                    "title": capfirst(
                        formats.date_format(date(year, month, n), "MONTH_DAY_FORMAT")
                    ),
                }
                for n in range(first.day, last.day + 1)
            ],
        }
    if year:
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({year_field: year, month_field: n}),
                    "title": capfirst(formats.date_format(date(year, n, 1), "YEAR_MONTH_FORMAT")),
                }
                for n in range(first.month, last.month + 1)
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({year_field: str(n)}), "title": str(n)}
            for n in range(first.year, last.year + 1)
        ],
    }


class OneRowAdmin(admin.ModelAdmin):
    """Settings kept in one row: no adding or deleting, and the list goes straight to the row.

    `row_get` returns the row (creating it with its defaults if needed), from the app's selector.
    """

    row_get = None

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        opts = self.model._meta
        row = type(self).row_get()
        return redirect(f"admin:{opts.app_label}_{opts.model_name}_change", row.pk)


class EmailSearchMixin:
    """Admin search by the start of an email address: an index range scan, where Django's
    default "contains" reads every row. `search_email_field` names the email column."""

    search_email_field = "email"
    search_help_text = MSG_SEARCH_EMAIL_START

    def get_search_results(self, request, queryset, search_term_given):
        term = search_term(search_term_given)
        if not term:
            return queryset, False
        return self.search_filter(
            queryset, email_prefix_q(term=term, field=self.search_email_field)
        ), False

    def search_filter(self, queryset, matches):
        return queryset.filter(matches)
