"""Tokens never reach the API server's log lines."""

from __future__ import annotations

import logging

from streamer.api import _RedactTokens


def test_access_tokens_are_redacted_from_log_lines() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/v1/ws?access_token=s3cr3t-T0k3n&x=1"),
        None,
    )
    assert _RedactTokens().filter(record)
    line = record.getMessage()
    assert "s3cr3t" not in line
    assert "access_token=<redacted>&x=1" in line
