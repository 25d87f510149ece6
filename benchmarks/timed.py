"""Run one command and append its wall time and peak memory to a JSON-lines log (used by benchmarks.run).

    python -m benchmarks.timed LOG -- COMMAND...

Peak memory is the largest resident set of the command's processes (getrusage of the waited-for children),
which for a pipeline stage is the stage's own Python process. The command's exit code is passed on.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    log, command = argv[0], argv[2:]
    start = time.perf_counter()
    code = subprocess.call(command)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
    with open(log, "a") as fh:
        fh.write(json.dumps({"command": " ".join(command), "seconds": round(seconds, 2),
                             "peak_gb": round(peak_kb / 2**20, 2), "exit": code}) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
