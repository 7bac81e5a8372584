"""One JSON object per log line, with the request id and any ``extra={...}`` fields.

Credentials in URLs never reach the log: the WebSocket client may authenticate with ``?token=`` (browsers
cannot set headers), and uvicorn logs each handshake's path with its query string.
"""

import json
import logging
import re
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}
_CREDENTIAL_IN_QUERY = re.compile(r"([?&](?:token|api_key|key)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    return _CREDENTIAL_IN_QUERY.sub(r"\1[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
