"""What each middleware costs the low-stock webhook: in-process, through Django's test client.

    python bench/bench_middleware.py [--requests N] [--rounds R]

On a fresh SQLite file, posts the manager's webhook body N times per configuration and prints the
median time per request over R interleaved rounds: the whole stack without the webhook's short
path (as before it), that stack without each middleware in turn (what removing it saves), and
the stack as configured (poolsite.middleware.WebhookFastPath right after SecurityMiddleware).
The test client skips the socket and gunicorn, so these are the in-process costs only; the
end-to-end figures under load are `make bench-webhook`'s. Not a test.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = '{"event": "low_stock", "current_seats": 5, "threshold": 10, "message": "库存不足预警"}'
KEY = "bench-key"
FAST_PATH = "poolsite.middleware.WebhookFastPath"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_middleware_")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="poolsite.settings",
        POOL_IGNORE_DOTENV="1",
        DEBUG="0",
        SECRET_KEY="bench-only",
        POOL_ENCRYPTION_KEY="YmVuY2gtb25seS1rZXktMzItYnl0ZXMtbG9uZy4uLi4=",
        MANAGER_API_KEY=KEY,
        DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3",
        ALLOWED_HOSTS="testserver",
    )
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import override_settings

    call_command("migrate", verbosity=0)
    configured = list(settings.MIDDLEWARE)
    full = [m for m in configured if m != FAST_PATH]
    configs = {"whole stack, no short path": full}
    # Removing one removes what cannot run without it (authentication, messages and axes need sessions).
    needs = {
        "SessionMiddleware": ("AuthenticationMiddleware", "MessageMiddleware", "AxesMiddleware"),
        "AuthenticationMiddleware": ("AxesMiddleware",),
    }
    for name in full:
        short = name.rsplit(".", 1)[-1]
        gone = {short, *needs.get(short, ())}
        label = f"  without {short}" + (f" (+{len(gone) - 1} needing it)" if len(gone) > 1 else "")
        configs[label] = [m for m in full if m.rsplit(".", 1)[-1] not in gone]
    configs["as configured (short path)"] = configured

    def per_request(middleware: list[str]) -> float:
        with override_settings(MIDDLEWARE=middleware):
            client = Client(HTTP_X_API_KEY=KEY)
            for _ in range(20):  # warm-up: imports, the URL resolver, the connection
                client.post("/webhooks/low-stock/", BODY, content_type="application/json")
            start = time.perf_counter()
            for _ in range(args.requests):
                response = client.post(
                    "/webhooks/low-stock/", BODY, content_type="application/json"
                )
                assert response.status_code == 202, response.content
            return (time.perf_counter() - start) / args.requests

    timings: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, middleware in configs.items():
            timings[name].append(per_request(middleware))
    base = statistics.median(timings["whole stack, no short path"])
    print(
        f"{args.requests} webhook posts per configuration, median of {args.rounds} interleaved rounds (test client, SQLite)"
    )
    print(f"{'configuration':<52} {'µs/request':>11} {'vs whole stack':>15}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:<52} {median * 1e6:>11.0f} {(median - base) * 1e6:>+14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
