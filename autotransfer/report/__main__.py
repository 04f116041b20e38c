"""``python -m autotransfer.report RUN_DIR [OUT]``: re-render a run's report without the CLI."""
from __future__ import annotations

import sys

from autotransfer.report.render import render_report

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m autotransfer.report RUN_DIR [OUT]")
    print(render_report(sys.argv[1], out=sys.argv[2] if len(sys.argv) == 3 else None))
