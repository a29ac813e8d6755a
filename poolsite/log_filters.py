"""What the service logs passes through the same redaction as what it stores."""

import logging

from poolsite.text import redact


class RedactSecrets(logging.Filter):
    """Removes token-shaped text and the secret settings (REDACTED_SETTINGS) from each record,
    its arguments and its traceback, before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
