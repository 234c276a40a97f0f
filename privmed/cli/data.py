"""``privmed phantom`` and ``models``: the built-in data set and the model zoo."""

from __future__ import annotations

import argparse
from pathlib import Path

from privmed.config import DataConfig
from privmed.errors import GRID_FOLDER_MISSING, PrivmedError


def add_parsers(sub) -> None:
    """The ``phantom`` and ``models`` commands."""
    d = DataConfig  # by default the phantom that ``privmed train`` uses without --data
    ph = sub.add_parser("phantom", help="write the built-in phantom data set and/or an image grid PNG")
    ph.add_argument("--grid", default="phantom_grid.png", help="PNG of samples per class")
    ph.add_argument("--dataset", help="also write the data set (images + metadata.csv) to this folder")
    ph.add_argument("--n", type=int, default=d.phantom_samples, help=f"images (default {d.phantom_samples})")
    ph.add_argument("--image-size", type=int, default=d.image_size, help=f"side in pixels (default {d.image_size})")
    ph.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    ph.set_defaults(handler=cmd_phantom)

    models = sub.add_parser("models", help="list the models")
    models.set_defaults(handler=cmd_models)


def cmd_phantom(args: argparse.Namespace) -> int:
    """``privmed phantom``: an image grid, and the data set when ``--dataset`` is given."""
    from privmed import rundir
    from privmed.data.phantom import PhantomSpec, generate_phantom, write_image_grid, write_phantom_dataset

    spec = PhantomSpec(n_samples=args.n, image_size=args.image_size, seed=args.seed)
    grid = Path(args.grid)
    if not grid.parent.is_dir():
        raise PrivmedError(GRID_FOLDER_MISSING.format(path=grid, folder=grid.parent))
    rundir.check_writable(grid.parent)
    if args.dataset:
        rundir.check_writable(args.dataset)
    images, table = generate_phantom(spec)
    grid = write_image_grid(images, table["label"].to_numpy(), args.grid,
                            title=f"privmed phantom, {args.image_size}px, seed {args.seed}")
    print(f"image grid written to {grid}")
    if args.dataset:
        manifest = write_phantom_dataset(args.dataset, spec)
        print(f"data set written to {manifest.parent} (manifest {manifest.name})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``privmed models``: the registry, one line a model."""
    from privmed.models import MODELS

    for name, info in MODELS.items():
        dims = "/".join(f"{d}D" for d in info.spatial_dims)
        print(f"{name:16s} {dims:6s} grad mode {info.grad_sample_mode:10s} {info.description}")
    return 0
