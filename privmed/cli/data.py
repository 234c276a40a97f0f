"""``privmed phantom`` and ``models``: the built-in data set and the model zoo."""

from __future__ import annotations

import argparse
from pathlib import Path

from privmed.config import DataConfig
from privmed.errors import GRID_FOLDER_MISSING, PrivmedError

from .options import Option, add_command


D = DataConfig  # by default the phantom that ``privmed train`` uses without --data

#: every option of ``privmed phantom``
PHANTOM_OPTIONS = [
    Option("--grid", help="PNG of samples per class", default="phantom_grid.png"),
    Option("--dataset", help="also write the data set (images + metadata.csv) to this folder (default: the grid "
           "only)"),
    Option("--n", help=f"images (default {D.phantom_samples})", type=int, default=D.phantom_samples),
    Option("--image-size", help=f"side in pixels (default {D.image_size})", type=int, default=D.image_size),
    Option("--seed", help=f"default {D.seed}", type=int, default=D.seed),
    Option("--findings", help="a multi-label phantom with these findings per image, any of "
           "mass,calcification,distortion (one 0/1 manifest column each; train with --label-column mass "
           "calcification distortion; default: none, the binary mass phantom)", metavar="F1,F2,..."),
    Option("--per-class", help="images per grid row block (default 8)", type=int, default=8),
    Option("--by-density", help="grid rows are class x BI-RADS density", action="store_true"),
]


def add_parsers(sub) -> None:
    """The ``phantom`` and ``models`` commands."""
    add_command(sub, "phantom", PHANTOM_OPTIONS, cmd_phantom,
                help="write the built-in phantom data set and/or an image grid PNG")
    add_command(sub, "models", [], cmd_models, help="list the models")


def cmd_phantom(args: argparse.Namespace) -> int:
    """``privmed phantom``: an image grid, and the data set when ``--dataset`` is given."""
    from privmed import rundir
    from privmed.data.phantom import (PhantomSpec, grid_sample, phantom_grid_classes, write_image_grid,
                                      write_phantom_dataset)

    spec = PhantomSpec(n_samples=args.n, image_size=args.image_size, seed=args.seed, findings=args.findings or ())
    grid = Path(args.grid)
    if not grid.parent.is_dir():
        raise PrivmedError(GRID_FOLDER_MISSING.format(path=grid, folder=grid.parent))
    rundir.check_writable(grid.parent)
    if args.dataset:
        rundir.check_writable(args.dataset)
    images, table = grid_sample(spec, per_class=args.per_class, by_density=args.by_density)
    classes, names = phantom_grid_classes(table, by_density=args.by_density)
    grid = write_image_grid(images, classes, args.grid, per_class=args.per_class, class_names=names,
                            title=f"privmed phantom, {args.image_size}px, seed {args.seed}")
    print(f"image grid written to {grid}")
    if args.dataset:
        manifest = write_phantom_dataset(args.dataset, spec)
        print(f"data set written to {manifest.parent} (manifest {manifest.name})"
              + (f"; train on its findings with --label-column {' '.join(spec.findings)}" if spec.findings else ""))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``privmed models``: the registry, one line a model."""
    from privmed.models import MODELS

    for name, info in MODELS.items():
        dims = "/".join(f"{d}D" for d in info.spatial_dims)
        print(f"{name:16s} {dims:6s} grad mode {info.grad_sample_mode:10s} {info.description}")
    print(f"{'monai:<Name>':16s} {'2D/3D':6s} grad mode {'hooks':10s} any network of monai.networks.nets, e.g. "
          "monai:DenseNet121 (--model-arg for its arguments; docs/models.md)")
    for prefix, example in (("timm", "swin_tiny_patch4_window7_224"), ("torchvision", "resnet50")):
        print(f"{prefix + ':<name>':16s} {'2D':6s} grad mode {'hooks':10s} a {prefix} model from --model-weights, "
              f"e.g. {prefix}:{example} (the backbones extra; docs/backbones.md)")
    return 0
