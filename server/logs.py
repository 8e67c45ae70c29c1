"""Log output: plain text for a terminal, or one JSON object per line (``--log-json``).

Job lines carry ``job_id`` and ``tenant`` (passed as ``extra=`` by the code that logs them); in
JSON they become top-level keys, so a log pipeline can filter one job or one tenant. Keys a
reader may rely on: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, then any of
``job_id``, ``tenant``, ``format`` the line carries, and ``exception`` when one was logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

CONTEXT_KEYS = ("job_id", "tenant", "format")
"""Record attributes copied into JSON lines when present."""


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _TextFormatter(logging.Formatter):
    """The text format, with ``[job_id tenant]`` appended on job lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job_id = record.__dict__.get("job_id")
        if job_id is not None:
            text += f" [job={job_id} tenant={record.__dict__.get('tenant') or '-'}]"
        return text


def configure_logging(*, json_lines: bool, level: int = logging.INFO) -> None:
    """Send the process's logs to stderr as text or JSON lines (replaces earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
