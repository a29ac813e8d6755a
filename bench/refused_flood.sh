#!/bin/sh
# Rows left by 2,000 refused webhook calls (wrong keys, one address), and whether the right key is
# accepted right after. On a scratch SQLite file unless DATABASE_URL names a scratch database.
# Usage: sh bench/refused_flood.sh    (from the repository root)
set -e
export POOL_IGNORE_DOTENV=1 SECRET_KEY=measure MANAGER_API_KEY=right ALLOWED_HOSTS=testserver LOG_LEVEL=ERROR
export DATABASE_URL="${DATABASE_URL:-sqlite:////tmp/refused_flood.sqlite3}"
export POOL_ENCRYPTION_KEY="$(.venv/bin/python -c 'import base64;print(base64.b64encode(bytes(32)).decode())')"
rm -f /tmp/refused_flood.sqlite3*
.venv/bin/python manage.py migrate -v0
.venv/bin/python manage.py shell -v0 -c "
import time
from django.db.models import Sum
from django.test import Client
from webhooks.models import WebhookEvent
c, t = Client(), time.monotonic()
codes = {c.post('/webhooks/low-stock/', '{}', content_type='application/json', HTTP_X_API_KEY=f'wrong{n}').status_code for n in range(2000)}
print('2000 wrong-key calls answered', sorted(codes), 'in %.1f s' % (time.monotonic() - t))
print('rows left:', WebhookEvent.objects.count(), '- calls counted in them:', WebhookEvent.objects.aggregate(s=Sum('calls'))['s'])
r = c.post('/webhooks/low-stock/', '{\"event\": \"low_stock\", \"current_seats\": 1, \"threshold\": 5}', content_type='application/json', HTTP_X_API_KEY='right')
print('the right key right after:', r.status_code, r.json())
" 2>/dev/null  # one "Unauthorized" log line per call otherwise
