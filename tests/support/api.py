"""Calling the JSON API through the test client."""

import json


def post_json(client, url, body, **extra):
    return client.post(url, json.dumps(body), content_type="application/json", **extra)
