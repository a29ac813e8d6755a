"""/favicon.ico answers, so browsers' requests for it do not fill the logs with 404 warnings."""

import pytest

pytestmark = pytest.mark.django_db


def test_the_favicon_is_served_to_anyone(client, caplog):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert "Not Found" not in caplog.text
