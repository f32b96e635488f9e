"""``python -m simulations.demo [flags]``: the same as ``vllm-scaler demo [flags]``."""

import sys

from scaler.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
