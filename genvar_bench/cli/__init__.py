"""Command line: `python -m genvar_bench run ...` trains, scores and tabulates methods;
`report` makes the tables and figures; `score` and `sample` use a kept model;
`diagnose` measures kept models' gradient signal-to-noise ratio; `bench` checks the
kernels' speed-ups. Each subcommand's module registers its own
parser (`add_parser`) and handler."""
from __future__ import annotations

import argparse
import sys

import genvar_bench.methods  # noqa: F401  (registers the built-in methods)
from genvar_bench.cli import bench, diagnose, report, run, sample, score
from genvar_bench.cli.run import build_configs  # noqa: F401  (planning, for scripts and tests)

# The subcommands, in the order `--help` lists them.
COMMANDS = (run, score, sample, report, diagnose, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m genvar_bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def load_plugins(argv: list[str] | None) -> None:
    """Registers the methods of installed entry points and of every `--plugin` in argv,
    before the parser is built from the registry: their options become flags."""
    from genvar_bench.plugins import PluginError, load_entry_points, load_plugin

    load_entry_points()
    prescan = argparse.ArgumentParser(add_help=False)
    prescan.add_argument("--plugin", action="append", default=[])
    prescan.add_argument("--config", default=None)
    known, _ = prescan.parse_known_args(sys.argv[1:] if argv is None else argv)
    if known.config is not None:  # a sweep file's plug-ins: their options are flags too
        from genvar_bench.sweeps import plugins_of

        known.plugin += plugins_of(known.config)
    for source in known.plugin:
        try:
            load_plugin(source)
        except PluginError as error:
            sys.exit(f"error: {error}")



def main(argv: list[str] | None = None) -> int:
    load_plugins(argv)
    args = build_parser().parse_args(argv)
    return args.handler(args)
