"""The floors `make bench-webhook` measures the webhook against (bench only, never deployed).

- settings / urls / views / wsgi: a bare Django project, no installed apps and no middleware,
  whose one view validates the webhook's JSON and inserts one row into the same table.
- app_settings / app_urls / app_views: this project's own settings (its whole middleware stack)
  with one extra route, /webhooks/bench-floor/, that inserts one row with the ORM: the in-app floor.
"""
