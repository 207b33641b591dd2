"""Run the benchmarks and write the results: ``python -m benchmarks.run``.

``make bench`` runs every comparison with the full preset (about ten minutes on a
2-core CPU) and writes ``benchmarks/results/<name>.json`` and ``results.md``.
``--quick`` shortens every timing and sweep for development; ``--only`` runs some
comparisons and keeps the others' results; ``--labs-runs 1`` times each lab once;
``--tables`` rewrites ``results.md`` from the JSON files without measuring.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from . import report
from .config import PRESETS, RESULTS, Config, with_options
from .timing import machine_info

COMPARISONS = ("masks", "channels", "macs", "speedup", "sparse_kernels", "labs", "llm", "grading")
INSTALL_HINT = 'pip install -e ".[bench]" -c constraints.txt'


def load(names: Sequence[str]) -> dict[str, ModuleType]:
    """The comparison modules; a missing Torch-Pruning is reported with how to install it."""
    try:
        return {name: importlib.import_module(f"benchmarks.{name}") for name in names}
    except ModuleNotFoundError as error:
        if error.name != "torch_pruning":
            raise
        raise SystemExit(f"the benchmarks need Torch-Pruning: {INSTALL_HINT}") from error


def run_comparison(module: ModuleType, config: Config, preset: str, out: Path) -> Path:
    """Run one comparison and write its JSON file; returns the path."""
    machine = machine_info(config)
    start = time.perf_counter()
    results = module.run(config)
    payload = {"comparison": module.NAME, "title": module.TITLE, "preset": preset,
               "machine": machine, "config": dataclasses.asdict(config),
               "wall_s": time.perf_counter() - start, "results": results}
    return report.write_json(payload, out / f"{module.NAME}.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument("--quick", action="store_true",
                         help="short timings and sweeps, one run of each lab (development)")
    presets.add_argument("--smoke", action="store_true",
                         help="tiny models, millisecond timings: checks the harness runs")
    parser.add_argument("--only", nargs="+", choices=COMPARISONS, default=list(COMPARISONS),
                        metavar="NAME", help=f"comparisons to run, of {', '.join(COMPARISONS)}")
    parser.add_argument("--labs-runs", type=int, help="runs of each lab (median reported)")
    parser.add_argument("--labs", nargs="*", type=Path, metavar="NOTEBOOK",
                        help="the notebooks to time (default: labs/*.ipynb)")
    parser.add_argument("--threads", type=int, help="torch threads for every timing")
    parser.add_argument("--tables", action="store_true",
                        help="only rewrite results.md from the JSON files, measuring nothing")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"folder for the JSON files and results.md (default {RESULTS})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    labs = None if args.labs is None else tuple(args.labs)
    try:
        config = with_options(PRESETS[preset](), threads=args.threads,
                              labs_runs=args.labs_runs, labs=labs)
    except ValueError as error:
        parser.error(str(error))
    modules = {} if args.tables else load(args.only)
    start = time.perf_counter()
    for number, module in enumerate(modules.values(), start=1):
        print(f"[{number}/{len(modules)}] {module.TITLE}", flush=True)
        path = run_comparison(module, config, preset, args.out)
        print(f"    wrote {path} after {time.perf_counter() - start:.0f} s", flush=True)
    everything = load(COMPARISONS)
    results = report.read_results(args.out, COMPARISONS)
    if not results:
        parser.error(f"no results in {args.out}: run the benchmarks before --tables")
    markdown = report.markdown(results, {n: m.TITLE for n, m in everything.items()},
                               {n: m.markdown for n, m in everything.items()})
    (args.out / "results.md").write_text(markdown)
    what = "tables rewritten" if args.tables else f"{preset} run took"
    print(f"wrote {args.out / 'results.md'}; {what} {time.perf_counter() - start:.0f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
