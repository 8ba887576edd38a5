"""`python -m genvar_bench report`: the summary tables (results.md), the figures and the
results pages (index.html) of every results folder under --out."""
from __future__ import annotations

import sys
from pathlib import Path

from genvar_bench import figures, pages, tables


def add_parser(commands) -> None:
    report = commands.add_parser(
        "report", help="summary tables (results.md) and seaborn figures from results/*/*/results.csv")
    report.add_argument("--out", default="results", help="results folder (default: results/)")
    report.add_argument("--baseline", default=None, metavar="MODEL",
                        help='every model\'s paired difference to this one, e.g. "vae k=1", in '
                             "each folder that has it (results.md and the pages)")
    report.set_defaults(handler=command_report)


def command_report(args) -> int:
    from genvar_bench.results import ResultsFileError

    out = Path(args.out)
    if not out.is_dir():
        sys.exit(f"error: --out {args.out} is not a folder")
    if args.baseline is not None:
        labels = tables.model_labels(out)
        if not any(args.baseline in found for found in labels.values()):
            known = sorted({label for found in labels.values() for label in found})
            sys.exit(f"error: --baseline {args.baseline!r} is no model under {args.out}; "
                     f"models: {', '.join(repr(label) for label in known) or 'none'}")
    try:
        written = (tables.write_tables(out, args.baseline) + figures.draw_all(out)
                   + pages.write_pages(out, args.baseline))
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
