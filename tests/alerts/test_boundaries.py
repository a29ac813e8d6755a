"""What the alerts app and the rest know of each other: one module of the webhooks app asks for an
evaluation, and alerts reads the pool and the runs only through the accounts and webhooks
selectors, never their models."""

from pathlib import Path

import pytest

from tests.support.imports import imported_modules

ROOT = Path(__file__).resolve().parents[2]
# The one place that evaluates after a run, a follow-up round or a reconcile pass; and what wires
# the app in (settings name it, the admin finds its admin module, the templates load its tags).
MAY_IMPORT_ALERTS = {"webhooks/alerting.py"}
ALERTS_MAY_READ = {
    "accounts.crypto",
    "accounts.fields",
    "accounts.selectors",
    "accounts.tokens",
    "webhooks.metrics",  # to add its collector to the registry GET /metrics serves
    "webhooks.selectors",
}


def app_modules(*apps: str) -> list[Path]:
    return sorted(path for app in apps for path in (ROOT / app).rglob("*.py"))


def test_only_the_evaluation_after_a_run_imports_alerts():
    importers = {
        str(path.relative_to(ROOT))
        for path in app_modules("accounts", "webhooks", "apitokens", "poolsite")
        if any(name.split(".")[0] == "alerts" for name in imported_modules(path, names=False))
    }
    assert importers == MAY_IMPORT_ALERTS


@pytest.mark.parametrize(
    "path", app_modules("alerts"), ids=lambda path: str(path.relative_to(ROOT))
)
def test_alerts_reads_the_other_apps_only_through_their_selectors(path):
    outside = {
        name
        for name in imported_modules(path, names=False)
        if name.split(".")[0] in ("accounts", "webhooks", "apitokens")
    }
    assert outside <= ALERTS_MAY_READ
