"""DP-SGD step time per model and Opacus per-sample-gradient mode, relative to non-private.

For each model, in ONE process, this times a plain non-private optimizer step
(forward + backward + SGD step) and a DP-SGD step for each Opacus mode (hooks,
functorch, ew = expanded weights, ghost = ghost/fast gradient clipping), each made with
``PrivacyEngine.make_private(noise_multiplier=1.0, max_grad_norm=1.0)``. Poisson sampling
is off for timing: the same fixed batch is fed straight into the wrapped model and
optimizer. Configurations are measured round-robin (one step of each per round, order
rotated every round, first round discarded as warm-up) and the median is reported.

Every mode is also checked for correctness on a tiny copy of the model (32 px, batch 4):
per-sample gradients against one-example-at-a-time gradients (hooks, functorch, ew), and
for ghost the clipped, summed gradient against manual per-example clipping.
``correct`` is ``yes``/``no``, or ``unsupported`` when Opacus raises.

Scattering models are timed twice: ``<name>/head``, the trainable head on precomputed
scattering features (how privmed trains them: the scattering is data-independent and
computed once), and ``<name>``, the full model with the scattering in every step.

Writes ``<out>/dp_speed.csv`` (model,image_size,batch_size,mode,median_step_ms,
ratio_to_nonprivate,correct; backbone rows also device,freeze,images_per_s,peak_step_mb,load_1min)
and ``<out>/dp_speed.md``.

    python benchmarks/dp_speed.py                      # all models, 64 px, batch 64
    python benchmarks/dp_speed.py --models resnet9_small --repeats 3

``--backbones`` times timm / torchvision backbones per ``model.freeze`` mode instead (the backbones
extra, ``.venv-backbones``, docs/backbones.md); their rows and the md's "Pretrained backbones" section
are kept by a run without it. Each backbone is built as privmed trains it (random weights: the time
does not depend on their values) and timed as above on the whole model: the frozen part's forward is
included in both steps (privmed computes a frozen prefix once and caches it, so for backbone and
last_block a real epoch is cheaper than these steps). Then ``images_per_s`` = batch size / DP step
time; ``peak_step_mb``: memory one step needs above what the process held before it (the kernel's
high-water mark of the resident set, ``VmHWM``, reset through ``/proc/self/clear_refs``, over one step,
minus the resident set before it, with glibc told to return blocks over 64 KiB to the system,
``mallopt``, for this measurement only; the timing uses ``configure_cpu_allocator``, which keeps freed
memory); ``correct`` is checked on a small model of the same family at 32 px, in float64 so that a
wrong gradient stands out from rounding. Rows are merged into ``<out>/dp_speed.csv`` (earlier rows of
other models and devices kept) and the md's section "Pretrained backbones" is rewritten.

    .venv-backbones/bin/python benchmarks/dp_speed.py --backbones \\
        --models timm:swin_tiny_patch4_window7_224,torchvision:resnet50 --batch-size 4 --repeats 2
"""

from __future__ import annotations

import argparse
import copy
import csv
import ctypes
import ctypes.util
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from privmed.models import (  # noqa: E402
    DEFAULT_CNN,
    GRAD_SAMPLE_MODES,
    MODELS,
    build_model,
    configure_cpu_allocator,
)
from privmed.models.finetune import apply_freeze  # noqa: E402

warnings.filterwarnings("ignore", message="Full backward hook is firing")
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="In CPU autocast")
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")

CHECK_SIZE, CHECK_BATCH = 32, 4
# small variants for the correctness check (same architecture, fewer channels/layers)
CHECK_OVERRIDES = {
    "resnet9": {"width": 0.125},
    "vit": {"dim": 32, "depth": 2, "num_heads": 2},
    "scatter_cnn": {"channels": 16},
}
#: the csv's columns (the last four: backbone rows only)
CSV_COLUMNS = ["model", "image_size", "batch_size", "mode", "median_step_ms", "ratio_to_nonprivate", "correct",
               "device", "freeze", "images_per_s", "peak_step_mb", "load_1min"]


# ---------------------------------------------------------------------------------------
# correctness at tiny size


def _reference_grads(model: nn.Module, x, y) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model)
    crit = nn.CrossEntropyLoss(reduction="sum")
    grads: dict[str, list] = {n: [] for n, p in model.named_parameters() if p.requires_grad}
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        crit(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                grads[n].append(p.grad.detach().clone())
    return {n: torch.stack(g) for n, g in grads.items()}


def _close(a, b, scale: float | None = None) -> bool:
    """allclose with an absolute tolerance relative to ``scale`` (default: max |b|). For a
    clipped *sum* over examples pass the per-example scale: the sum can cancel to far below
    the size of its terms, and float32 rounding is relative to the terms."""
    if a is None or a.shape != b.shape:
        return False
    scale = b.abs().max().item() if scale is None else scale
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1e-3))


def check_mode(model: nn.Module, mode: str, x, y) -> str:
    """'yes' / 'no' / 'unsupported' for one model and Opacus mode."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping, get_gsm_class
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    ref = _reference_grads(model, x, y)
    model = copy.deepcopy(model)
    crit = nn.CrossEntropyLoss(reduction="sum")
    try:
        if mode == "ghost":
            norms = torch.stack([g.flatten(1).norm(dim=1) for g in ref.values()]).norm(dim=0)
            c = 0.5 * norms.min().item()
            coef = (c / (norms + 1e-6)).clamp(max=1.0)
            expected = {n: torch.einsum("i,i...->...", coef, g) for n, g in ref.items()}
            gsm = GradSampleModuleFastGradientClipping(model, batch_first=True, loss_reduction="sum", max_grad_norm=c)
            opt = DPOptimizerFastGradientClipping(
                torch.optim.SGD(gsm.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=c,
                expected_batch_size=len(x), loss_reduction="sum",
            )
            DPLossFastGradientClipping(gsm, opt, crit, loss_reduction="sum")(gsm(x), y).backward()
            got = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        else:
            kwargs = {"force_functorch": mode == "functorch"} if mode != "ew" else {}
            gsm = get_gsm_class(mode)(model, batch_first=True, loss_reduction="sum", **kwargs)
            crit(gsm(x), y).backward()
            got = {n: p.grad_sample for n, p in model.named_parameters() if p.requires_grad}
            expected = ref
    except Exception as e:  # noqa: BLE001 - any failure means "this mode does not work here"
        print(f"    {mode}: unsupported ({type(e).__name__}: {str(e)[:120]})")
        return "unsupported"
    ok = set(got) == set(expected) and all(
        _close(got[n], expected[n], scale=ref[n].abs().max().item()) for n in expected
    )
    return "yes" if ok else "no"


# ---------------------------------------------------------------------------------------
# timing


@dataclass
class Config:
    model: str
    mode: str
    step: Callable[[], None] | None
    times: list[float] = field(default_factory=list)
    correct: str = "n/a"


def make_step(module, optimizer, criterion, x, y) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(module(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # drop per-sample gradients before the next config

    return step


def make_configs(label: str, base: nn.Module, x, y, modes, lr: float = 0.01) -> list[Config]:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    configs = []
    model = copy.deepcopy(base)
    configs.append(
        Config(label, "nonprivate", make_step(model, torch.optim.SGD(model.parameters(), lr=lr), nn.BCEWithLogitsLoss(), x, y))
    )
    for mode in modes:
        model = copy.deepcopy(base)
        try:
            out = PrivacyEngine().make_private(
                module=model,
                optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                data_loader=DataLoader(TensorDataset(x, y), batch_size=len(x)),
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                poisson_sampling=False,
                grad_sample_mode=mode,
                criterion=nn.BCEWithLogitsLoss(),
            )
            module, optimizer = out[0], out[1]
            criterion = out[2] if mode == "ghost" else nn.BCEWithLogitsLoss()
            step = make_step(module, optimizer, criterion, x, y)
            step()  # fail here, not in the middle of the timing loop
        except Exception as e:  # noqa: BLE001
            print(f"    {label}/{mode}: make_private or first step failed: {type(e).__name__}: {str(e)[:160]}")
            step = None
        configs.append(Config(label, mode, step))
    return configs


def run_round_robin(configs: list[Config], repeats: int, min_measure_s: float = 0.05) -> None:
    """One measurement of every config per round, rotating the order each round.

    Steps shorter than ``min_measure_s`` (tiny heads) are repeated within a measurement
    (the same count for every config of the group) and the mean per step is recorded.
    """
    live = [c for c in configs if c.step is not None]
    t0 = time.perf_counter()
    live[0].step()
    inner = max(1, math.ceil(min_measure_s / max(time.perf_counter() - t0, 1e-6)))
    for r in range(repeats + 1):  # round 0 is warm-up
        k = r % len(live)
        for c in live[k:] + live[:k]:
            t0 = time.perf_counter()
            for _ in range(inner):
                c.step()
            dt = (time.perf_counter() - t0) / inner
            if r > 0:
                c.times.append(dt)
        if r > 0:
            print(f"    round {r}/{repeats}" + (f" ({inner} steps each)" if inner > 1 else "") + ": "
                  + ", ".join(f"{c.mode}={c.times[-1] * 1e3:.1f}ms" for c in live))


def wait_for_idle(max_load: float, timeout_s: float) -> float:
    start = time.time()
    while True:
        load = os.getloadavg()[0]
        if load <= max_load or time.time() - start > timeout_s:
            return load
        print(f"  1-min load {load:.2f} > {max_load}: waiting ...")
        time.sleep(30)


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    ap.add_argument("--modes", default=",".join(GRAD_SAMPLE_MODES))
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--max-load", type=float, default=1.5, help="wait until the 1-min load average is below this")
    ap.add_argument("--wait-timeout", type=float, default=1800)
    ap.add_argument(
        "--default-allocator", action="store_true",
        help="keep glibc's default malloc settings (by default privmed.models.configure_cpu_allocator() is applied)",
    )
    ap.add_argument("--backbones", action="store_true",
                    help="--models are timm:/torchvision: backbones, timed per freeze mode")
    ap.add_argument("--device-name", default="CPU, 2 cores", help="the card or CPU named in the backbone rows")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.backbones:
        return _run_backbones(args, names, modes)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown models {unknown}; available: {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    allocator = "glibc default" if args.default_allocator else (
        "tuned (configure_cpu_allocator)" if configure_cpu_allocator() else "glibc default (mallopt unavailable)"
    )
    load = wait_for_idle(args.max_load, args.wait_timeout)
    print(f"threads={args.threads} allocator={allocator} load={load:.2f}")

    rows, all_configs = [], []
    for name in names:
        print(f"== {name}")
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        S, B = args.image_size, args.batch_size
        x = torch.randn(B, 1, S, S, generator=g)
        y = torch.randint(0, 2, (B, 1), generator=g).float()
        base = build_model(name, image_size=S, num_outputs=1)

        # correctness at tiny size
        torch.manual_seed(0)
        tiny = build_model(name, image_size=CHECK_SIZE, num_outputs=2, **CHECK_OVERRIDES.get(name, {}))
        tx = torch.randn(CHECK_BATCH, 1, CHECK_SIZE, CHECK_SIZE, generator=g)
        ty = torch.randint(0, 2, (CHECK_BATCH,), generator=g)
        correct = {m: check_mode(tiny, m, tx, ty) for m in modes}
        print("   correct: " + ", ".join(f"{m}={c}" for m, c in correct.items()))

        groups = []
        if MODELS[name].trainable_part:
            part = MODELS[name].trainable_part
            with torch.no_grad():
                feats = base.features(x)
                tfeats = tiny.features(tx)
            head_correct = {m: check_mode(getattr(tiny, part), m, tfeats, ty) for m in modes}
            groups.append((f"{name}/{part}", getattr(base, part), feats, head_correct))
        groups.append((name, base, x, correct))

        for label, module, inp, corr in groups:
            configs = make_configs(label, module, inp, y, modes)
            for c in configs:
                if c.mode != "nonprivate":
                    c.correct = corr[c.mode] if c.step is not None else "unsupported"
            run_round_robin(configs, args.repeats)
            all_configs.extend(configs)
            base_ms = statistics.median(configs[0].times) * 1e3
            for c in configs:
                med = statistics.median(c.times) * 1e3 if c.times else math.nan
                rows.append({
                    "model": label, "image_size": S, "batch_size": B, "mode": c.mode,
                    "median_step_ms": round(med, 1), "ratio_to_nonprivate": round(med / base_ms, 3),
                    "correct": c.correct,
                })

    args.out.mkdir(parents=True, exist_ok=True)
    kept = backbone_rows(args.out / "dp_speed.csv")  # a --backbones run's rows stay
    with open(args.out / "dp_speed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="")
        w.writeheader()
        w.writerows(rows + kept)

    # fastest correct mode per model (scatter models: judged on the head, how they train)
    best: dict[str, tuple[str, float]] = {}
    for r in rows:
        name = r["model"].split("/")[0]
        judged_on_head = MODELS[name].trainable_part is not None
        if (judged_on_head and "/" not in r["model"]) or r["mode"] == "nonprivate" or r["correct"] != "yes":
            continue
        if name not in best or r["ratio_to_nonprivate"] < best[name][1]:
            best[name] = (r["mode"], r["ratio_to_nonprivate"])

    lines = [
        "# DP-SGD step time relative to non-private training",
        "",
        f"Image size {args.image_size}, batch size {args.batch_size}, {args.threads} CPU threads, "
        f"torch {torch.__version__}, opacus {__import__('opacus').__version__}, {platform.machine()}, "
        f"allocator: {allocator}; 1-min load at start {load:.2f}. "
        f"Median of {args.repeats} round-robin rounds (after 1 warm-up round), one process; steps under 50 ms are repeated within a measurement and averaged.",
        "",
        "DP step = `PrivacyEngine.make_private(noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)`, "
        "fixed batch, BCE-with-logits loss, SGD. `ratio` = DP step time / non-private step time of the same "
        "module measured alongside. `correct` = per-sample gradients equal one-example-at-a-time gradients "
        "(ghost: clipped sum equals manual per-example clipping) on a tiny copy (32 px, batch 4).",
        "",
        "`<scatter model>/head` rows time the trainable head on precomputed scattering features: that is how "
        "the scattering models are trained (the scattering transform has no parameters and does not depend on "
        "data, so it is computed once per image). Rows without `/head` time the full model, scattering included.",
        "",
        "| model | mode | median step (ms) | ratio to non-private | correct |",
        "|---|---|---:|---:|---|",
    ]
    for r in rows:
        ms = "-" if math.isnan(r["median_step_ms"]) else f"{r['median_step_ms']:.1f}"
        ratio = "-" if math.isnan(r["ratio_to_nonprivate"]) else f"{r['ratio_to_nonprivate']:.2f}"
        lines.append(f"| {r['model']} | {r['mode']} | {ms} | {ratio} | {r['correct']} |")
    lines += ["", "## Fastest correct mode per model", "",
              "| model | fastest correct mode | ratio | registry `grad_sample_mode` |", "|---|---|---:|---|"]
    for name, (mode, ratio) in best.items():
        reg = MODELS[name].grad_sample_mode
        lines.append(f"| {name} | {mode} | {ratio:.2f} | {reg}{'' if reg == mode else ' (differs)'} |")
        if reg != mode:
            print(f"NOTE: fastest correct mode for {name} is {mode}, registry says {reg}")
    if DEFAULT_CNN in best:
        mode, ratio = best[DEFAULT_CNN]
        verdict = "meets" if ratio <= 1.5 else "MISSES"
        lines += ["", f"Default CNN `{DEFAULT_CNN}` with `{mode}`: DP step = {ratio:.2f}x non-private, "
                      f"{verdict} the <= 1.5x target."]
    md = args.out / "dp_speed.md"
    before = md.read_text() if md.is_file() else ""
    md.write_text("\n".join(lines) + "\n")
    if kept and SECTION in before:  # a --backbones run's section stays as it wrote it (its rounds included)
        md.write_text(md.read_text() + "\n" + SECTION + before.partition(SECTION)[2])
    elif kept:
        write_section(md, args.out / "dp_speed.csv")
    print("\n".join(lines))
    return 0


def _run_backbones(args, names: list[str], modes: list[str]) -> int:
    torch.set_num_threads(args.threads)
    if not args.default_allocator:
        configure_cpu_allocator()
    load = wait_for_idle(args.max_load, args.wait_timeout)
    print(f"threads={args.threads} load={load:.2f} device={args.device_name!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    size = args.image_size if args.image_size != 64 else 224  # backbones: 224 px unless asked otherwise
    return run_backbones(names, modes, image_size=size, batch_size=args.batch_size, repeats=args.repeats,
                         device=args.device_name, out=args.out, load=load)


# ---------------------------------------------------------------------------------------
# --backbones: timm / torchvision backbones per freeze mode


FREEZES = ("backbone", "last_block", "bias", "lora")
SECTION = "## Pretrained backbones"
#: small models of the same families for the gradient checks (32 px)
TINY = {"timm:swin": {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": [1, 1, 1, 1],
                      "num_heads": [1, 1, 1, 1], "drop_path_rate": 0.0},
        "timm:vit": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}


def tiny_args(name: str) -> dict:
    for prefix, args in TINY.items():
        if name.startswith(prefix):
            return {**args, "input_size": 32}
    return {"input_size": 32}


def backbone_correctness(name: str, freeze: str, modes) -> dict[str, str]:
    """``check_mode`` of every mode on a small model of the backbone's family (32 px, float64)."""
    torch.manual_seed(0)
    tiny = apply_freeze(build_model(name, num_outputs=2, image_size=32, **tiny_args(name)).double(), freeze)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (4,), generator=g)
    return {m: check_mode(tiny, m, x, y) for m in modes}


def _return_memory_to_os() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
    libc.mallopt(m_mmap_max, 65536)
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 128 * 1024)
    libc.malloc_trim(0)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1]) / 1024


def peak_step_mb(step) -> float:
    """Peak resident memory above the level before one call of ``step``: the kernel's high-water mark
    (``VmHWM``), reset first (``/proc/self/clear_refs``), minus the resident set before the step."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mb("VmRSS")
    step()
    return _status_mb("VmHWM") - before


def run_backbones(names, modes, *, image_size: int, batch_size: int, repeats: int, device: str, out: Path,
                  load: float) -> int:
    """Time every backbone x freeze mode x Opacus mode; merge the rows into ``out``'s csv and md."""
    rows = []
    for name in names:
        for freeze in FREEZES:
            print(f"== {name} freeze={freeze}", flush=True)
            correct = backbone_correctness(name, freeze, modes)
            print("   correct: " + ", ".join(f"{m}={c}" for m, c in correct.items()), flush=True)
            torch.manual_seed(0)
            model = apply_freeze(build_model(name, num_outputs=1, image_size=image_size), freeze)
            g = torch.Generator().manual_seed(0)
            x = torch.rand(batch_size, 1, image_size, image_size, generator=g)
            y = torch.randint(0, 2, (batch_size, 1), generator=g).float()
            configs = make_configs(f"{name}/{freeze}", model, x, y, modes)
            for c in configs:
                c.correct = "n/a" if c.mode == "nonprivate" else (correct[c.mode] if c.step else "unsupported")
            run_round_robin(configs, repeats, min_measure_s=0.0)
            rows += [{**r, "load_1min": round(load, 2)}
                     for r in _rows(name, freeze, configs, image_size=image_size, batch_size=batch_size, device=device)]
            del model, configs
            configure_cpu_allocator()  # back to the timing's allocator for the next group
    merge_csv(out / "dp_speed.csv", rows)
    write_section(out / "dp_speed.md", out / "dp_speed.csv", repeats=repeats)
    return 0


def _rows(name: str, freeze: str, configs, *, image_size: int, batch_size: int, device: str) -> list[dict]:
    """One row per config of a group; the peak memory is measured here, one step each, memory returned to the
    system as it is freed."""
    _return_memory_to_os()
    rows = []
    base_ms = statistics.median(configs[0].times) * 1e3
    for c in configs:
        med = statistics.median(c.times) * 1e3 if c.times else math.nan
        memory = peak_step_mb(c.step) if c.step is not None else math.nan
        rows.append({"model": name, "image_size": image_size, "batch_size": batch_size, "mode": c.mode,
                     "median_step_ms": round(med, 1), "ratio_to_nonprivate": round(med / base_ms, 3),
                     "correct": c.correct, "device": device, "freeze": freeze,
                     "images_per_s": round(batch_size / (med / 1e3), 2) if med == med else math.nan,
                     "peak_step_mb": round(memory, 1)})
        c.step = None  # frees the wrapped model's per-sample gradients before the next measurement
    return rows


def _key(row) -> tuple:
    return row["model"], str(row["image_size"]), str(row["batch_size"]), row["mode"], row.get("device") or "", \
        row.get("freeze") or ""


def merge_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` written into the csv at ``path``, replacing rows of the same model/size/batch/mode/device/freeze."""
    old = list(csv.DictReader(path.open())) if path.is_file() else []
    new = {_key({k: str(v) for k, v in r.items()}) for r in rows}
    kept = [r for r in old if _key(r) not in new]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(kept + rows)


def backbone_rows(csv_path: Path) -> list[dict]:
    return [r for r in csv.DictReader(csv_path.open()) if r.get("freeze")] if csv_path.is_file() else []


def section(rows: list[dict], *, repeats: int | str = "?") -> list[str]:
    """The markdown section of the backbone rows, with the fastest correct mode per model and freeze mode."""
    lines = [SECTION, "",
             "`dp_speed.py --backbones`, random weights, torch and Opacus of the "
             f".venv-backbones environment; median of {repeats} round-robin rounds after a warm-up round. Each "
             "step runs the whole model: the frozen part's forward is included in the non-private and the DP step "
             "alike (privmed caches a frozen prefix, so real epochs of backbone and last_block are cheaper). "
             "`img/s` = batch / DP step; `peak MB` = resident memory one step needs above what the process held "
             "before it (VmHWM over one step, reset by /proc/self/clear_refs, minus VmRSS before; glibc returning "
             "blocks over 64 KiB to the system; 0.0: the step fitted in memory the process already held); `correct`: "
             "per-sample gradients equal one-sample-at-a-time ones on a small model of the family (32 px, float64); "
             "`load`: the 1-min load average when the run started. With few rounds and a load above the core count "
             "the times are noisy (a ratio below 1 is noise): rerun with more --repeats on a quiet machine before "
             "choosing a mode from them.",
             "", "| device | model | px | batch | freeze | mode | step (ms) | ratio | img/s | peak MB | correct | load |",
             "|---|---|---:|---:|---|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['model']} | {r['image_size']} | {r['batch_size']} | {r['freeze']} | "
                     f"{r['mode']} | {r['median_step_ms']} | {float(r['ratio_to_nonprivate']):.2f} | "
                     f"{r['images_per_s']} | {r['peak_step_mb']} | {r['correct']} | {r.get('load_1min', '')} |")
    lines += ["", "### Fastest correct mode per backbone and freeze mode", "",
              "| device | model | freeze | fastest correct mode | ratio | img/s |", "|---|---|---|---|---:|---:|"]
    best: dict[tuple, dict] = {}
    for r in rows:
        if r["mode"] == "nonprivate" or r["correct"] != "yes" or r["median_step_ms"] in ("", "nan"):
            continue
        key = (r["device"], r["model"], r["freeze"])
        if key not in best or float(r["ratio_to_nonprivate"]) < float(best[key]["ratio_to_nonprivate"]):
            best[key] = r
    for (device, model, freeze), r in best.items():
        lines.append(f"| {device} | {model} | {freeze} | {r['mode']} | {float(r['ratio_to_nonprivate']):.2f} | "
                     f"{r['images_per_s']} |")
    return lines


def write_section(md_path: Path, csv_path: Path, *, repeats: int | str = "?") -> None:
    """Rewrite the backbones section of the md (everything from :data:`SECTION` on) from the csv's rows."""
    text = md_path.read_text() if md_path.is_file() else ""
    head = text.split(SECTION)[0].rstrip("\n")
    md_path.write_text(head + "\n\n" + "\n".join(section(backbone_rows(csv_path), repeats=repeats)) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
