"""Run the benchmarks and print their tables: `python bench/run.py [NAME...]`.

Each benchmark module has `run() -> str`, a Markdown table whose every
figure is set next to the alternative measured in the same run (absolute
times drift on shared machines; ratios hold). `--write` also saves the
tables to bench/RESULTS.md, which the README quotes.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["overhead", "startup", "throughput", "slots", "scale", "fleet", "push", "sweepmem", "status"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], default=[], metavar="NAME",
                        help=f"which benchmarks (default all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--write", action="store_true", help="save the tables to bench/RESULTS.md")
    parser.add_argument("--plot", action="store_true",
                        help="draw scale.png and fleet.png beside bench/RESULTS.md (needs matplotlib)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, fewer rounds (a check that the benchmarks run, not figures)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    header = (
        f"Measured on {time.strftime('%Y-%m-%d')}, {platform.node()}: {platform.machine()}, "
        f"{_cores()} cores, Python {platform.python_version()}.\n"
    )
    tables = [header]
    for name in args.names or BENCHMARKS:
        print(f"== {name}", file=sys.stderr, flush=True)
        module = importlib.import_module(name)
        quick = {"quick": True} if args.quick and "quick" in inspect.signature(module.run).parameters else {}
        tables.append(module.run(**quick))
        print(tables[-1], flush=True)
    if args.plot:
        import plots

        for path in plots.draw(HERE):
            print(f"wrote {path}", file=sys.stderr)
    if args.write:
        (HERE / "RESULTS.md").write_text("# Benchmark results\n\n" + "\n".join(tables))
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
