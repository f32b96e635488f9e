"""The README's configuration reference is generated from scaler.config.KEYS and must not drift from it.

Regenerate after changing KEYS: ``UPDATE_README=1 python -m pytest -q tests/unit/test_readme.py``.
"""

import os
import re
from pathlib import Path

from scaler.config import KEYS, defaults_table

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def render_reference() -> str:
    lines = ["| key | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for key, typ, default, bounds, doc in defaults_table():
        shown = "(see meaning)" if default == "(see meaning)" else f"`{default}`"
        lines.append(f"| `{key}` | {typ} | {shown} | {bounds.replace('|', '/')} | {doc.replace('|', '/')} |")
    return "\n".join(lines)


def _block(text: str) -> str:
    m = re.search(re.escape(START) + r"\n(.*?)\n?" + re.escape(END), text, flags=re.S)
    assert m, f"README.md lacks the {START} ... {END} block"
    return m.group(1).strip()


def test_readme_configuration_reference_matches_keys() -> None:
    text = README.read_text()
    expected = render_reference()
    if os.environ.get("UPDATE_README"):
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), f"{START}\n{expected}\n{END}", text, flags=re.S)
        README.write_text(text)
    assert _block(README.read_text()) == expected, "README configuration reference is stale: see module docstring"
    for key in KEYS:
        assert f"| `{key.name}` |" in text


def test_readme_has_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "bash tests/run.sh" in text
    assert "vllm-scaler simulate" in text and "pip install" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "tests/run.sh" in ci
