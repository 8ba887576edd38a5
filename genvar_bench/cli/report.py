"""`python -m genvar_bench report`: the summary tables (results.md) and the figures of
every results/<dataset>/<profile>/results.csv."""
from __future__ import annotations

import sys
from pathlib import Path

from genvar_bench import figures, tables


def add_parser(commands) -> None:
    report = commands.add_parser(
        "report", help="summary tables (results.md) and seaborn figures from results/*/*/results.csv")
    report.add_argument("--out", default="results", help="results folder (default: results/)")
    report.set_defaults(handler=command_report)


def command_report(args) -> int:
    from genvar_bench.results import ResultsFileError

    out = Path(args.out)
    if not out.is_dir():
        sys.exit(f"error: --out {args.out} is not a folder")
    try:
        written = tables.write_tables(out) + figures.draw_all(out)
    except ResultsFileError as error:
        sys.exit(f"error: {error}")
    except OSError as error:
        sys.exit(f"error: the report cannot be written under {args.out} "
                 f"({error.strerror or error}: {error.filename or ''})")
    for path in written:
        print(path, file=sys.stderr)
    if not written:
        print(f"no results under {args.out}/", file=sys.stderr)
        return 1
    return 0
