"""Run medtwin's benchmarks: `python benchmarks/run.py [--quick]` (also `make bench`)."""

import sys

from medtwin.cli import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]])
