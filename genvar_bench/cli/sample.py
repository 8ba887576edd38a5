"""`python -m genvar_bench sample MODEL --out FILE.png`: draw from a kept model."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from genvar_bench import figures
from genvar_bench.cli import arguments


# The most samples one grid holds (50 x 50 images): more gives an unreadable picture and,
# at 100,000, gigabytes of memory.
MAX_SAMPLES = 2500


def add_parser(commands) -> None:
    sample = commands.add_parser("sample", help="draw samples from a kept model into a PNG grid")
    sample.add_argument("model", help="a kept model file")
    sample.add_argument("--num", type=arguments.positive_int, default=64, help="samples to draw (default 64)")
    sample.add_argument("--out", required=True, help="the PNG file to write")
    sample.add_argument("--seed", type=arguments.seed_list, default=[0], help="seed of the draws (default 0)")
    sample.add_argument("--device", type=arguments.device_list, default=["cpu"], help="cpu (default) or cuda[:N]")
    sample.add_argument("--data-dir", default=None,
                        help="folder holding binarized_mnist.npz (2-D data only: drawn over it)")
    sample.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                        help="the plug-in a plug-in method's model needs (never loaded unless named)")
    sample.set_defaults(handler=command_sample)


def command_sample(args) -> int:
    if len(args.device) != 1 or len(args.seed) != 1:
        sys.exit("error: sample takes one --device and one --seed")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        sys.exit(f"error: --out {args.out} must name a .png file")
    if args.num > MAX_SAMPLES:
        sys.exit(f"error: --num {args.num} is more than one grid holds ({MAX_SAMPLES}); "
                 "draw several grids with different --seed")
    _check_writable(out)
    method, info = arguments.load_model_or_exit(args.model, args.device[0], args.plugin)
    torch.manual_seed(args.seed[0])
    samples = method.sample(args.num)
    if info["image_shape"] is None:  # 2-D data: drawn over the test set
        figures.save_scatter(samples, arguments.load_data_or_exit(info["dataset"], args.data_dir).test, out)
    else:
        figures.save_sample_grid(samples, tuple(info["image_shape"]), out,
                                value_range=tuple(info["value_range"]))
    print(f"{args.num} samples of {info['method']} ({info['artifact']}) -> {out}", file=sys.stderr)
    return 0


def _check_writable(out: Path) -> None:
    """--out can be written: its folder exists (or can be made) and takes a file."""
    from genvar_bench.cli.capacity import writable_folder

    if out.is_dir():
        sys.exit(f"error: --out {out} is a folder; name a .png file")
    writable_folder(out.parent if str(out.parent) else Path("."), f"--out {out}: the folder")
