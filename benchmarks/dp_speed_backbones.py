"""DP-SGD step time of timm / torchvision backbones per freeze mode and Opacus mode (``dp_speed.py --backbones``).

Needs the backbones extra (``.venv-backbones``, docs/backbones.md). For each backbone and
``model.freeze`` mode (backbone, last_block, bias, lora) this builds the model as privmed trains it
(random weights: the time does not depend on their values), and times in ONE process, round-robin
as ``dp_speed.py`` does, a non-private step and a DP step per Opacus mode on the whole model: the
frozen part's forward is included in both (privmed computes a frozen prefix once and caches it, so
for backbone and last_block a real epoch is cheaper than these steps). Then:

- ``images_per_s``: batch size / DP step time;
- ``peak_step_mb``: memory one step needs above what the process held before it: the kernel's
  high-water mark of the resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) over one
  step, minus the resident set before it, with glibc told to return blocks over 64 KiB to the
  system (``mallopt``) for this measurement only (the timing uses ``configure_cpu_allocator``,
  which keeps freed memory);
- ``correct``: per-sample gradients against one-sample-at-a-time gradients (ghost: clipped sum
  against manual clipping) on a small model of the same family at 32 px, in float64 so that a wrong
  gradient stands out from rounding.

Rows are merged into ``<out>/dp_speed.csv`` (earlier rows of other models and devices kept) and the
section "Pretrained backbones" of ``<out>/dp_speed.md`` is rewritten.

    .venv-backbones/bin/python benchmarks/dp_speed.py --backbones \\
        --models timm:swin_tiny_patch4_window7_224,torchvision:resnet50 --batch-size 4 --repeats 2
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import math
import os
import statistics
from pathlib import Path

import torch

from privmed.models import build_model
from privmed.models.finetune import apply_freeze

FREEZES = ("backbone", "last_block", "bias", "lora")
SECTION = "## Pretrained backbones"
COLUMNS = ["model", "image_size", "batch_size", "mode", "median_step_ms", "ratio_to_nonprivate", "correct",
           "device", "freeze", "images_per_s", "peak_step_mb", "load_1min"]
#: small models of the same families for the gradient checks (32 px)
TINY = {"timm:swin": {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": [1, 1, 1, 1],
                      "num_heads": [1, 1, 1, 1], "drop_path_rate": 0.0},
        "timm:vit": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}


def tiny_args(name: str) -> dict:
    for prefix, args in TINY.items():
        if name.startswith(prefix):
            return {**args, "input_size": 32}
    return {"input_size": 32}


def correctness(name: str, freeze: str, modes, check_mode) -> dict[str, str]:
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


def run(names, modes, *, image_size: int, batch_size: int, repeats: int, device: str, out: Path, dp_speed,
        load: float) -> int:
    """Time every backbone x freeze mode x Opacus mode; merge the rows into ``out``'s csv and md."""
    rows = []
    for name in names:
        for freeze in FREEZES:
            print(f"== {name} freeze={freeze}", flush=True)
            correct = correctness(name, freeze, modes, dp_speed.check_mode)
            print("   correct: " + ", ".join(f"{m}={c}" for m, c in correct.items()), flush=True)
            torch.manual_seed(0)
            model = apply_freeze(build_model(name, num_outputs=1, image_size=image_size), freeze)
            g = torch.Generator().manual_seed(0)
            x = torch.rand(batch_size, 1, image_size, image_size, generator=g)
            y = torch.randint(0, 2, (batch_size, 1), generator=g).float()
            configs = dp_speed.make_configs(f"{name}/{freeze}", model, x, y, modes)
            for c in configs:
                c.correct = "n/a" if c.mode == "nonprivate" else (correct[c.mode] if c.step else "unsupported")
            dp_speed.run_round_robin(configs, repeats, min_measure_s=0.0)
            rows += [{**r, "load_1min": round(load, 2)}
                     for r in _rows(name, freeze, configs, image_size=image_size, batch_size=batch_size, device=device)]
            del model, configs
            dp_speed.configure_cpu_allocator()  # back to the timing's allocator for the next group
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
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(kept + rows)


def backbone_rows(csv_path: Path) -> list[dict]:
    return [r for r in csv.DictReader(csv_path.open()) if r.get("freeze")] if csv_path.is_file() else []


def section(rows: list[dict], *, repeats: int | str = "?") -> list[str]:
    """The markdown section of the backbone rows, with the fastest correct mode per model and freeze mode."""
    lines = [SECTION, "",
             "`dp_speed.py --backbones` (benchmarks/dp_speed_backbones.py), random weights, torch and Opacus of the "
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
