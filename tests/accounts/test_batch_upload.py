"""An upload's text is kept apart from its batch row, in pieces of whole lines, and read back
line for line as it was sent."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from hypothesis import given
from hypothesis import strategies as st

from accounts import models
from accounts.models import AccountBatch, BatchUpload, upload_pieces
from accounts.services import account_batch_stage, text_lines
from accounts.services.batch_work import _upload_lines


@given(st.text(alphabet="ab\r\n", max_size=60), st.integers(min_value=1, max_value=7))
def test_pieces_join_to_the_text_and_give_its_lines_with_their_numbers(text, size):
    import unittest.mock

    with unittest.mock.patch.object(models, "UPLOAD_PIECE_CHARS", size):
        pieces = upload_pieces(text)
    assert "".join(pieces) == text and all(pieces)
    read = [line for piece in pieces for line in text_lines(piece)]
    assert read == list(text_lines(text))


@pytest.mark.django_db
def test_a_staged_upload_is_read_back_piece_by_piece(monkeypatch):
    monkeypatch.setattr(models, "UPLOAD_PIECE_CHARS", 10)
    text = "line one\r\nline two\rline three\nfour\n"
    batch = account_batch_stage(content=text, label="pieces")
    assert BatchUpload.objects.filter(batch=batch).count() > 1
    assert batch.content == text and batch.has_upload
    assert list(_upload_lines(batch.pk)) == list(text_lines(text))


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_staged_text_out_and_back(monkeypatch):
    monkeypatch.setattr(models, "UPLOAD_PIECE_CHARS", 8)
    text = "a@x.com,eyJ…,,,\nb@x.com,eyJ…,,,\n"
    batch = account_batch_stage(content=text, label="moved")
    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0012_token_hints")])
    old = executor.loader.project_state(("accounts", "0012_token_hints")).apps
    assert old.get_model("accounts", "AccountBatch").objects.get(pk=batch.pk).content == text

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert AccountBatch.objects.get(pk=batch.pk).content == text
    assert BatchUpload.objects.filter(batch_id=batch.pk).count() > 1
