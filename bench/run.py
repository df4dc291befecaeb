"""Run the benchmarks and print one JSON object per line.

Each module `bench/bench_<name>.py` defines `run() -> Iterable[dict]`; every dict it
yields is printed as one JSON line, with each figure beside the baseline measured in the
same run. `make bench` runs them all; `make bench BENCH=<name>` runs those whose name
starts with <name>. Benchmarks use a database of their own (`ems_bench` on the machine's
PostgreSQL unless BENCH_DATABASE_URL says otherwise) and never assert timings.
"""

import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    wanted = os.environ.get("BENCH", "").strip()
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    selected = [n for n in names if not wanted or n.removeprefix("bench_").startswith(wanted)]
    if not selected:
        print(json.dumps({"error": f"no benchmark matches BENCH={wanted!r}", "available": names}))
        return 2
    for name in selected:
        module = importlib.import_module(f"bench.{name}")
        for line in module.run():
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
