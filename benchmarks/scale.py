"""Scale: peak memory and DP-SGD throughput on phantom data sets written to disk, 1 vs N processes.

For each data set size (``--sizes``), the phantom is written once to ``--data-dir``
(``privmed phantom --dataset DIR --n N --image-size S``; the write time is recorded). Then,
for each process count (``--nproc``), a fresh child process (``python scale.py --child ...``)
loads the data set streamed from disk (``stream=True``, as ``data.stream: on``: images decoded per batch,
:mod:`privmed.data.lazy`), builds the default CNN (``resnet9_small``) and runs ``--steps``
logical DP-SGD steps (after ``--warmup``) through privmed's private-training core: Poisson
sampling of patients at the expected batch ``--batch-size``, per-sample clipping, noise; with
2+ processes each rank takes its share of every Poisson batch and Opacus's distributed
optimiser adds the noise once (:mod:`privmed.privacy.distributed`). A fixed number of steps,
not epochs, keeps the cost independent of the data set size.

Measured per run (blocks of 1 MiB and more returned to the system when freed,
``MALLOC_MMAP_THRESHOLD_``, unless ``--glibc-default``): peak resident memory of every rank (``resource.getrusage(RUSAGE_SELF)``
in the rank at the end; ``ru_maxrss``) and of the whole child (``os.wait4``), the seconds
to load and check the data (every image decoded once, one at a time, for the cross-split
copy check), and training images/s (all ranks' images over the slowest rank's time).
``--nonprivate`` also times the same steps without DP (one process), for the DP step time ÷
non-private step time ratio (useful on a GPU: ``--device cuda``). ``--model resnet9 --findings
mass,calcification,distortion`` runs the multi-label path instead: a phantom with several findings
per image (one 0/1 column each), one output per finding.

Writes ``<out>/scale.csv`` and ``<out>/scale.md``.

    python benchmarks/scale.py                                      # 10,000 and 100,000 images, 128 px
    python benchmarks/scale.py --sizes 2000,20000 --steps 10        # reduced (2 shared CPU cores)
    python benchmarks/scale.py --device cuda --workers 8 --nonprivate --steps 50
    python benchmarks/scale.py --sizes 100000 --nproc 1 --model resnet9 --findings mass,calcification,distortion
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000", help="data set sizes (images), comma separated")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--nproc", default="1,2", help="process counts, comma separated")
    p.add_argument("--steps", type=int, default=20, help="timed logical DP-SGD steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=128, help="expected (Poisson) logical batch")
    p.add_argument("--physical-batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="data loader processes per rank (decoding)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet9_small", help="a privmed model name (resnet9: ResNet9 with GroupNorm)")
    p.add_argument("--findings", default="", help="multi-label: a phantom with these findings per image, "
                                                   "comma separated (e.g. mass,calcification,distortion)")
    p.add_argument("--nonprivate", action="store_true", help="also time non-private steps (1 process)")
    p.add_argument("--data-dir", default=str(HERE / ".scale_data"), help="where the phantoms are written (kept)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--glibc-default", action="store_true",
                   help="measure under glibc's default allocator instead of returning blocks of 1 MiB and more to "
                        "the system at once (MALLOC_MMAP_THRESHOLD_)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- the parent


def ensure_phantom(n: int, size: int, data_dir: Path, findings: str = "") -> tuple[Path, float | None]:
    """The phantom of ``n`` images on disk (multi-label with ``findings``), and the seconds writing
    it took (None: written earlier)."""
    kind = f"_{findings.replace(',', '-')}" if findings else ""
    root = data_dir / f"phantom_{n}_{size}px{kind}"
    if (root / "metadata.csv").is_file():
        return root, None
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "privmed", "phantom", "--dataset", str(root), "--n", str(n),
                    "--image-size", str(size), "--grid", str(data_dir / f"grid_{n}{kind}.png"),
                    *(["--findings", findings] if findings else [])], check=True)
    return root, time.perf_counter() - t0


def measure(args: argparse.Namespace, root: Path, n: int, nproc: int, *, private: bool) -> dict:
    """One child process: train ``args.steps`` steps; its result plus the child's own peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        job = {"root": str(root), "nproc": nproc, "private": private, "result": tmp,
               **{k: getattr(args, k) for k in ("image_size", "steps", "warmup", "batch_size",
                                                 "physical_batch_size", "workers", "device", "model",
                                                 "findings")}}
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               **({} if args.glibc_default else {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})}
        child = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(job)], env=env)
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the run with {n} images and {nproc} process(es) failed")
        ranks = [json.loads(f.read_text()) for f in sorted(Path(tmp).glob("rank*.json"))]
    seconds = max(r["train_seconds"] for r in ranks)
    return {"model": args.model, "outputs": len(labels(args.findings)), "images": n,
            "image_size": args.image_size, "processes": nproc, "dp": "yes" if private else "no",
            "device": args.device, "steps": args.steps, "expected_batch": args.batch_size,
            "load_seconds": round(max(r["load_seconds"] for r in ranks), 1),
            "step_seconds": round(seconds / args.steps, 3),
            "images_per_s": round(sum(r["images"] for r in ranks) / seconds, 1),
            "peak_rss_mb_per_rank": round(max(r["maxrss_kb"] for r in ranks) / 1024),
            "peak_rss_mb_all_ranks": round(sum(r["maxrss_kb"] for r in ranks) / 1024),
            "peak_rss_mb_child": round(usage.ru_maxrss / 1024)}


def write_results(rows: list[dict], writes: dict[int, float | None], args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scale.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "scale.md").write_text(markdown(rows, writes, args))


def markdown(rows: list[dict], writes: dict[int, float | None], args: argparse.Namespace) -> str:
    cols = list(rows[0])
    lines = [f"# Scale: {args.model} with DP-SGD on the phantom written to disk, streamed ({args.image_size} px)", "",
             f"`python benchmarks/scale.py {' '.join(sys.argv[1:])}` on {platform.machine()}, "
             f"{os.cpu_count()} CPU(s), device {args.device}; {args.steps} timed logical steps (after "
             f"{args.warmup}) of expected batch {args.batch_size} (physical {args.physical_batch_size}), "
             f"patients Poisson-sampled; "
             + ("glibc's default allocator." if args.glibc_default else
                "`MALLOC_MMAP_THRESHOLD_=1048576`: blocks of 1 MiB and more go back to the system when freed, so the "
                "peak measures live memory, not the heap glibc keeps (under its default the peak moves by about 20% "
                "from run to run with the Poisson chunk sizes; `--glibc-default`)."), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    lines += ["", *ratios(rows), "", "Writing the phantom (`privmed phantom --dataset`): " + ", ".join(
        f"{n:,} images {'%.0f s' % s if s is not None else '(written by an earlier run)'}" for n, s in writes.items())]
    return "\n".join(lines) + "\n"


def ratios(rows: list[dict]) -> list[str]:
    """The peak-memory ratio between the largest and smallest data set, and DP / non-private step time."""
    out = []
    one = [r for r in rows if r["processes"] == 1 and r["dp"] == "yes"]
    if len(one) >= 2:
        small, large = min(one, key=lambda r: r["images"]), max(one, key=lambda r: r["images"])
        ratio = large["peak_rss_mb_per_rank"] / small["peak_rss_mb_per_rank"]
        out.append(f"Peak memory (1 process), {large['images']:,} vs {small['images']:,} images: "
                   f"{ratio:.2f}x ({'within' if ratio <= 1.2 else 'OVER'} the 1.2x bound).")
    for r in rows:
        if r["dp"] == "no":
            dp = next((d for d in one if d["images"] == r["images"]), None)
            if dp:
                out.append(f"DP step time / non-private step time ({r['images']:,} images, {r['device']}): "
                           f"{dp['step_seconds'] / r['step_seconds']:.2f}.")
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    sizes = [int(s) for s in args.sizes.split(",")]
    writes = {}
    roots = {}
    for n in sizes:
        roots[n], writes[n] = ensure_phantom(n, args.image_size, Path(args.data_dir), args.findings)
    rows = []
    for n in sizes:
        for nproc in [int(p) for p in args.nproc.split(",")]:
            rows.append(measure(args, roots[n], n, nproc, private=True))
            print(rows[-1], flush=True)
        if args.nonprivate:
            rows.append(measure(args, roots[n], n, 1, private=False))
            print(rows[-1], flush=True)
    write_results(rows, writes, args)


# --------------------------------------------------------------------------- the child


def labels(findings: str) -> tuple[str, ...]:
    """The manifest's label columns: one per finding (multi-label), else the binary ``label``."""
    return tuple(findings.split(",")) if findings else ("label",)


def child(job: dict) -> None:
    from privmed.privacy import distributed

    if job["nproc"] > 1:
        distributed.launch(run_rank, (job,), nproc=job["nproc"], out=job["result"])
    else:
        run_rank(job)


def run_rank(job: dict) -> None:
    """Load streamed, train ``steps`` logical steps, write this rank's figures."""
    import warnings

    import torch
    from torch.utils.data import TensorDataset

    from privmed.config import DataConfig
    from privmed.data.sources import load_dataset
    from privmed.models import build_model
    from privmed.privacy.units import resolve_unit
    from privmed.privacy import distributed
    from privmed.privacy.engine import make_plain, make_private, plan_schedule

    warnings.filterwarnings("ignore")
    ranks = distributed.join_from_env(job["device"])
    device = distributed.rank_device(job["device"])
    t0 = time.perf_counter()
    columns = labels(job["findings"])
    train = load_dataset(DataConfig(path=job["root"], image_size=job["image_size"], label_columns=columns),
                         stream=True).split("train")
    load_seconds = time.perf_counter() - t0
    unit = resolve_unit(None, train.patient_ids, max_images_per_patient=1, n=len(train))
    schedule = plan_schedule(unit, batch_size=job["batch_size"], epochs=1)
    torch.manual_seed(0)
    net = build_model(job["model"], spatial_dims=2, in_channels=1, num_outputs=len(columns),
                      image_size=job["image_size"]).to(device)
    data = TensorDataset(train.image_tensor, torch.from_numpy(train.labels))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    if job["private"]:
        fit = make_private(net, optimizer, data, unit=unit, schedule=schedule, noise_multiplier=1.0, clip_norm=1.0,
                           accountant="rdp", device=device, num_workers=job["workers"])
    else:
        fit = make_plain(net, optimizer, data, unit=unit, schedule=schedule, replay_seed=None,
                         criterion=torch.nn.BCEWithLogitsLoss(reduction="sum"), num_workers=job["workers"])
    images, seconds = train_steps(fit, job, device)
    figures = {"rank": ranks.rank, "load_seconds": load_seconds, "train_seconds": seconds, "images": images,
               "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    (Path(job["result"]) / f"rank{ranks.rank}.json").write_text(json.dumps(figures))
    distributed.leave()


def train_steps(fit, job: dict, device: str) -> tuple[int, float]:
    """``warmup`` + ``steps`` logical steps through the engine's step loop, as the trainer takes them (each
    Poisson batch in physical chunks, one optimiser step); the images and seconds of the timed steps."""
    clock = Clock(job, device)

    def backward(x, y) -> float:
        clock.count(len(x))
        loss = fit.criterion(fit.module(x.to(device)), y.to(device))
        loss.backward()
        return float(loss.detach())

    try:
        while True:
            fit.run_epoch(backward, physical_batch_size=job["physical_batch_size"], after_step=clock.step)
    except Clock.Done:
        return clock.images, clock.seconds


class Clock:
    """Counts logical steps; times (and counts the images of) those after the warm-up."""

    class Done(Exception):
        """All steps are taken."""

    def __init__(self, job: dict, device: str) -> None:
        self.warmup, self.total, self.cuda = job["warmup"], job["warmup"] + job["steps"], device.startswith("cuda")
        self.steps, self.images, self.started, self.seconds = 0, 0, None, 0.0
        if self.warmup == 0:
            self.started = self._now()

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def count(self, images: int) -> None:
        """A physical batch of ``images`` goes in: counted once the warm-up is over."""
        if self.started is not None:
            self.images += images

    def step(self) -> None:
        """A logical step is done: start the clock after the warm-up, stop (raise :class:`Done`) after the last."""
        self.steps += 1
        if self.steps == self.warmup:
            self.started = self._now()
        if self.steps >= self.total:
            self.seconds = self._now() - self.started
            raise Clock.Done


if __name__ == "__main__":
    main()
