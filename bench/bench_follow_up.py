"""make bench-follow-up: one follow-up round over 10,000 imported Teams, at an unlimited rate.

A stand-in manager on loopback answers every Team-info request at once (a fixed record, tokens
included, as the real one sends them). The floor, measured in the same run against the same
server: the same number of GET requests over one keep-alive session, reading each JSON body and
nothing else. The round's figure is the whole of `manage.py follow_up --rate 0` minus start-up:
the selects, the client, the conditional UPDATE per Team and the status history. With the
default FOLLOW_UP_RATE of 5 a second, a round over 10,000 Teams takes 2,000 s whatever the pool
does: the rate, not the pool, is the limit, as long as the round at an unlimited rate is far
faster than that.

    python bench/bench_follow_up.py [--teams N] [--pg-url URL]
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_KEY = "YmVuY2gtb25seS1rZXktMzItYnl0ZXMtbG9uZy4uLi4="
API_KEY = "bench-follow-up-key"
STATUSES = ("active", "active", "active", "full", "banned", "expired")


class _Manager(BaseHTTPRequestHandler):
    """GET /admin/teams/<id>/info: the manager's record, answered at once."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: without this, each answer waits out a delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def do_GET(self):
        team_id = int(self.path.split("/")[3])
        team = {
            "id": team_id,
            "email": f"t{team_id}@example.com",
            "status": STATUSES[team_id % len(STATUSES)],
            "current_members": 1 + team_id % 6,
            "max_members": 6,
            "expires_at": "2027-01-01T00:00:00",
            "last_sync": "2026-11-29T08:00:00",
            "access_token": "eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.sig",
            "session_token": "eyJ...",
            "refresh_token": "rt_x",
            "client_id": "app_x",
        }
        body = json.dumps(
            {"success": True, "team": team, "team_accounts": [], "error": None}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def floor(url: str, teams: int) -> float:
    import requests

    session = requests.Session()
    start = time.perf_counter()
    for team_id in range(1, teams + 1):
        session.get(
            f"{url}/admin/teams/{team_id}/info", headers={"X-API-Key": API_KEY}, timeout=10
        ).json()
    return time.perf_counter() - start


def setup(teams: int) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.utils import timezone

    from accounts.models import Account, AccountBatch, AccountStatus, lookup_hashes
    from webhooks.models import FollowedTeam

    batch = AccountBatch.objects.create(
        label="bench", supplier="bench", source="command", status="loaded"
    )
    now = timezone.now()
    accounts = []
    for n in range(teams):
        email = f"t{n + 1}@example.com"
        token = f"rt_bench_{n}"
        accounts.append(
            Account(
                batch=batch,
                email=email,
                refresh_token=token,
                client_id="app_bench",
                status=AccountStatus.CONSUMED,
                consumed_at=now,
                **lookup_hashes(
                    email=email,
                    account_id="",
                    access_token=None,
                    session_token=None,
                    refresh_token=token,
                ),
            )
        )
    Account.objects.bulk_create(accounts, batch_size=1000)
    FollowedTeam.objects.bulk_create(
        [
            FollowedTeam(account=a, team_id=n + 1, imported_at=now)
            for n, a in enumerate(Account.objects.order_by("pk"))
        ],
        batch_size=1000,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=10_000)
    parser.add_argument(
        "--pg-url",
        default="",
        help="run against this (scratch) PostgreSQL database instead of SQLite",
    )
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Manager)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    workdir = tempfile.mkdtemp(prefix="bench-follow-up-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="poolsite.settings",
        POOL_IGNORE_DOTENV="1",
        SECRET_KEY="bench",
        POOL_ENCRYPTION_KEY=BENCH_KEY,
        DATABASE_URL=args.pg_url or f"sqlite:///{workdir}/bench.sqlite3",
        MANAGER_BASE_URL=url,
        MANAGER_API_KEY=API_KEY,
        FOLLOW_UP_EVERY_HOURS="0",
    )
    setup(args.teams)
    from django.core.management import call_command
    from django.db import connection

    from webhooks.models import FollowedTeam

    floor_seconds = floor(url, args.teams)
    start = time.perf_counter()
    call_command("follow_up", "--rate", "0", stdout=open(os.devnull, "w"))
    round_seconds = time.perf_counter() - start
    asked = FollowedTeam.objects.exclude(checked_at=None).count()
    assert asked == args.teams, f"the round asked about {asked} of {args.teams} Teams"
    rate_bound = args.teams / 5
    print(f"database: {connection.vendor}; Teams: {args.teams}")
    print(
        f"floor (bare GETs to the same stand-in, one session): {floor_seconds:6.2f} s  {args.teams / floor_seconds:7.0f}/s"
    )
    print(
        f"follow-up round at an unlimited rate:                {round_seconds:6.2f} s  {args.teams / round_seconds:7.0f}/s"
    )
    print(f"ratio round / floor: {round_seconds / floor_seconds:.2f}x")
    print(
        f"at the default FOLLOW_UP_RATE of 5/s the round takes {rate_bound:.0f} s: the rate is the limit "
        f"({rate_bound / round_seconds:.0f}x the pool's own time)"
    )
    server.shutdown()


if __name__ == "__main__":
    main()
