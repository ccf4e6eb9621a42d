"""``python -m physid.app.sweep JOB.json``: run one sweep job in this process."""

from __future__ import annotations

import sys

from physid.app.sweep.process import job_main

if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
