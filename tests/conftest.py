"""Suite-wide settings.

Hypothesis: under CI (``CI=true``) the property and fuzz tests run derandomized, so a landing run explores the
same examples every time and cannot go red on a new random draw; developers' runs stay random (and store what
they find in ``.hypothesis/``), and ``PROPERTY_EXAMPLES`` / ``FUZZ_EXAMPLES`` search deeper.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI", "").lower() == "true":
    settings.load_profile("ci")
