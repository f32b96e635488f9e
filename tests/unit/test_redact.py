"""scaler/redact.py: credentials out of addresses and texts, lengths bounded."""

import pytest

from scaler.redact import redact, redact_text, truncate
from scaler.server import refresher


@pytest.mark.parametrize("address, shown", [
    ("http://u:p@prom:9090/x", "http://prom:9090/x"),
    ("https://user:p@ss@prom", "https://prom"),           # an unencoded "@" in the password
    ("http://tok@[::1]:9090", "http://[::1]:9090"),
    ("http://u:p@h:99999", "http://h:99999"),             # malformed port: still total
    ("http://prom:9090", "http://prom:9090"),
    ("not a url", "not a url"),
])
def test_redact_drops_userinfo(address, shown) -> None:
    assert redact(address) == shown
    assert refresher.redact is redact            # the old import path still works


def test_redact_text_cleans_every_url_in_a_message() -> None:
    text = "GET http://user:pass@prom:9090/api failed; retry https://tok@b/c; mail x@y"
    assert redact_text(text) == "GET http://***@prom:9090/api failed; retry https://***@b/c; mail x@y"
    assert redact_text('{"url": "http://u:p@h"}') == '{"url": "http://***@h"}'    # inside JSON


def test_worked_example_of_truncate() -> None:
    assert truncate("a" * 1000, 20) == "aaaa... (1000 chars)"
    assert truncate("short", 20) == "short"
    assert all(len(truncate("x" * n, 30)) <= 30 for n in range(100))
