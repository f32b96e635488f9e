"""Making text safe to show: credentials removed from addresses, length bounded.

One place for both, imported by the config parser, the gRPC servicer and the
refresher (this module imports nothing from the package, so no import cycle):

* :func:`redact` drops the ``user:password@`` part of a URL (logs, metric
  labels, error messages);
* :func:`redact_text` replaces it with ``***`` in every URL inside a free text
  (a source error or a log line that quotes the address it failed on);
* :func:`truncate` bounds a text at ``limit`` characters, saying how long it was.

Worked example (``tests/unit/test_redact.py``): ``redact("http://u:p@prom:9090/x")``
is ``"http://prom:9090/x"``; ``truncate("a" * 1000, 20)`` is
``"aaaa... (1000 chars)"`` (20 characters).
"""

from __future__ import annotations

import re

# scheme://userinfo@ in a text: userinfo is everything up to the last "@" before the host's end ("/", "?",
# "#", space, quote, angle bracket). Percent-encoded or escaped forms (%40, \u0040) are text to this pattern.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s\"'<>]*@")
# The userinfo of one URL (anchored at its start): "@" may appear in an unencoded password, take the last.
_URL_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://)[^/?#]*@")

MAX_MESSAGE = 600
"""Characters of an error message returned to a client (gRPC status details) or logged for one."""

MAX_VALUE = 60
"""Characters of one metadata value or key quoted in an error message."""


def redact(address: str) -> str:
    """The address without ``user:password@``, fit for logs, metric labels and messages. Total: never raises."""
    return _URL_USERINFO.sub(r"\1", address, count=1)


def redact_text(text: str) -> str:
    """``text`` with the ``user:password`` of every URL in it replaced by ``***`` (``http://***@host``: the
    reader sees that credentials were there, not what they were)."""
    if "@" not in text:
        return text
    return _USERINFO.sub(r"\1***@", text)


def truncate(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` if at most ``limit`` characters, else its head and ``... (N chars)``, ``limit`` in all."""
    if len(text) <= limit:
        return text
    tail = f"... ({len(text)} chars)"
    return text[: max(0, limit - len(tail))] + tail
