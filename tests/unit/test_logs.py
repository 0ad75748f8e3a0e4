"""JSON log lines: trace and span ids, a keyed user hash, no message text, no raw user id."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from actors.user_actor import current_user
from adapters.bootstrap.settings import Settings, SettingsError
from adapters.observability.logs import configure_logging, user_hash


def test_json_lines_carry_trace_ids_and_a_hashed_user() -> None:
    out = io.StringIO()
    handler = configure_logging(level="INFO", fmt="json", salt="pepper", stream=out)
    try:
        tracer = TracerProvider().get_tracer("test")
        token = current_user.set("alice@example")
        try:
            with tracer.start_as_current_span("turn") as span:
                logging.getLogger("butler.test").warning(
                    "turn failed",
                    extra={"error_type": "StoreUnavailable", "text": "секрет", "user_id": "x"},
                )
        finally:
            current_user.reset(token)
        logging.getLogger("butler.test").info("no user here")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    ctx = span.get_span_context()
    assert first["trace_id"] == format(ctx.trace_id, "032x")
    assert first["span_id"] == format(ctx.span_id, "016x")
    assert first["user"] == user_hash("alice@example", b"pepper")
    assert len(first["user"]) == 12
    assert first["level"] == "WARNING"
    assert first["logger"] == "butler.test"
    assert first["message"] == "turn failed"
    assert first["error_type"] == "StoreUnavailable"
    assert "секрет" not in out.getvalue()
    assert "alice@example" not in out.getvalue()
    assert "user" not in second
    assert "trace_id" not in second


def test_hash_depends_on_the_salt() -> None:
    assert user_hash("alice", b"a") != user_hash("alice", b"b")
    assert user_hash("alice", b"a") == user_hash("alice", b"a")


def test_exceptions_keep_their_type_and_text_format_stays_plain() -> None:
    out = io.StringIO()
    handler = configure_logging(level="INFO", fmt="json", stream=out)
    try:
        try:
            int("boom")
        except ValueError:
            logging.getLogger("t").exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    line = json.loads(out.getvalue())
    assert line["error_type"] == "ValueError"
    assert "Traceback" in line["stack"]
    out = io.StringIO()
    handler = configure_logging(level="INFO", fmt="text", stream=out)
    try:
        logging.getLogger("t").info("plain")
    finally:
        logging.getLogger().removeHandler(handler)
    assert out.getvalue().rstrip().endswith("INFO t plain")


def test_settings_read_log_and_admin_variables() -> None:
    s = Settings.from_env(
        {
            "BUTLER_LOG_FORMAT": "JSON",
            "BUTLER_ADMIN_ADDR": "[::1]:9000",
            "BUTLER_ADMIN_TOKEN": "t",
            "BUTLER_ADMIN_URL": "http://h:1/",
        }
    )
    assert (s.log_format, s.admin_addr, s.admin_url) == ("json", ("::1", 9000), "http://h:1")
    assert "admin_token" not in repr(s)
    for bad in ({"BUTLER_LOG_FORMAT": "xml"}, {"BUTLER_ADMIN_ADDR": "nohost"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)
