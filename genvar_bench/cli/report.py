"""`python -m genvar_bench report`: the summary tables (results.md) and the figures of
every results/<dataset>/<profile>/results.csv."""
from __future__ import annotations

import sys

from genvar_bench import figures, report as tables


def add_parser(commands) -> None:
    report = commands.add_parser(
        "report", help="summary tables (results.md) and seaborn figures from results/*/*/results.csv")
    report.add_argument("--out", default="results", help="results folder (default: results/)")
    report.set_defaults(handler=command_report)


def command_report(args) -> int:
    written = tables.write_tables(args.out) + figures.draw_all(args.out)
    for path in written:
        print(path, file=sys.stderr)
    if not written:
        print(f"no results.csv under {args.out}/", file=sys.stderr)
        return 1
    return 0
