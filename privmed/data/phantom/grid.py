"""A labelled PNG grid of sample images (the phantom's, a generator's, a report's)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .spec import _is_int
from .write import _to_uint8

# Grid layout constants (documented in write_image_grid).
GRID_MIN_TILE = 96
GRID_PAD = 4
GRID_MAX_COLS = 8
GRID_TITLE_H = 28


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no scalable default font
        return ImageFont.load_default()


def write_image_grid(
    images: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    per_class: int = 8,
    class_names: Sequence[str] = ("benign", "malignant"),
    title: str | None = None,
) -> Path:
    """Write a labelled PNG grid of sample images, one block of rows per class (no matplotlib).

    Generic (also for GAN samples): class ``c`` is ``labels == c`` and is named
    ``class_names[c]``; its first ``per_class`` images, in the given order, fill
    rows of up to 8 tiles. A class with no images gets an empty row marked
    "(none)".

    Args:
        images: ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, H, W, 1)`` grayscale;
            floats are read as [0, 1] and clipped (map e.g. [-1, 1] outputs
            first), integer arrays as 0-255.
        labels: ``(N,)`` integer class indices.
        path: output PNG path (parent folders are created).
        per_class: images shown per class (>= 1).
        class_names: one name per class index.
        title: optional heading line.

    Layout: tiles are the images enlarged by the smallest integer factor that
    makes them at least 96 px (nearest neighbour, so pixels stay honest), with a
    4 px gap; a label column on the left; a 28 px title band if ``title``. The
    image height is ``[28 +] 4 + sum over classes of rows_c * (tile + 4)`` with
    ``rows_c = ceil(per_class / min(per_class, 8))``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    pixels = _grid_pixels(images)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != pixels.shape[0]:
        raise ValueError(f"{pixels.shape[0]} images but {labels.shape[0]} labels")
    if not _is_int(per_class) or per_class < 1:
        raise ValueError(f"per_class={per_class!r} must be an integer >= 1")
    layout = _GridLayout.of(pixels.shape[1:], labels, per_class=per_class, class_names=class_names, title=title)
    canvas = Image.new("L", (layout.width, layout.height), 255)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((GRID_PAD, (GRID_TITLE_H - 14) // 2), title, fill=0, font=_font(14))
    for c, caption in enumerate(layout.captions):
        _draw_class_rows(canvas, draw, layout, c, caption, pixels[np.flatnonzero(labels == c)[:per_class]])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _grid_pixels(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` uint8 pixels of one-channel images: integer arrays as 0-255, floats as [0, 1] clipped."""
    arr = np.asarray(images)
    if arr.ndim == 4 and 1 in (arr.shape[1], arr.shape[-1]):
        arr = arr[:, 0] if arr.shape[1] == 1 else arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W) (or one channel), got {np.shape(images)}")
    if np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) <= 255:
        return arr.astype(np.uint8)
    return _to_uint8(np.nan_to_num(arr.astype(np.float32), nan=0.0))


@dataclass(frozen=True)
class _GridLayout:
    """Where everything of the grid goes (see :func:`write_image_grid`'s Layout)."""

    factor: int  # enlargement of an image into a tile
    tile: tuple[int, int]  # (height, width) of a tile
    cols: int
    rows: int  # rows of tiles per class
    label_w: int  # the label column's width
    top: int  # the title band's height
    width: int
    height: int
    captions: list[str]

    @classmethod
    def of(cls, shape: tuple[int, int], labels: np.ndarray, *, per_class: int, class_names: Sequence[str],
           title: str | None) -> "_GridLayout":
        h, w = shape
        factor = max(1, math.ceil(GRID_MIN_TILE / max(min(h, w), 1)))
        th, tw = h * factor, w * factor
        cols = min(per_class, GRID_MAX_COLS)
        rows = math.ceil(per_class / cols)
        font = _font(14)
        names = [str(n) for n in class_names]
        counts = [int((labels == c).sum()) for c in range(len(names))]
        captions = [f"{n}\n({cnt} total)" for n, cnt in zip(names, counts)]
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        label_w = max(probe.multiline_textbbox((0, 0), cap, font=font)[2] for cap in captions) + 3 * GRID_PAD
        top = GRID_TITLE_H if title else 0
        width = label_w + cols * (tw + GRID_PAD) + GRID_PAD
        height = top + GRID_PAD + len(names) * rows * (th + GRID_PAD)
        if title:
            width = max(width, int(probe.textbbox((0, 0), title, font=font)[2]) + 2 * GRID_PAD)
        return cls(factor, (th, tw), cols, rows, label_w, top, width, height, captions)


def _draw_class_rows(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: _GridLayout, c: int, caption: str,
                     pixels: np.ndarray) -> None:
    """Class ``c``'s block: a separating line above (but the first), its caption, and its tiles (or "(none)")."""
    th, tw = layout.tile
    y0 = layout.top + GRID_PAD + c * layout.rows * (th + GRID_PAD)
    if c:
        draw.line([(0, y0 - GRID_PAD // 2 - 1), (layout.width, y0 - GRID_PAD // 2 - 1)], fill=160)
    draw.multiline_text((GRID_PAD, y0 + GRID_PAD), caption, fill=0, font=_font(14))
    if len(pixels) == 0:
        draw.text((layout.label_w, y0 + th // 2), "(none)", fill=96, font=_font(11))
    for j, image in enumerate(pixels):
        tile = Image.fromarray(np.ascontiguousarray(image), mode="L")
        if layout.factor > 1:
            tile = tile.resize((tw, th), Image.NEAREST)
        canvas.paste(tile, (layout.label_w + (j % layout.cols) * (tw + GRID_PAD),
                            y0 + (j // layout.cols) * (th + GRID_PAD)))


def phantom_grid_classes(table, *, by_density: bool = False) -> tuple[np.ndarray, list[str]]:
    """Grid rows for a phantom table: its findings' combinations (multi-label), class x BI-RADS density
    (``by_density``), or its two classes."""
    from .spec import CLASS_DIRS, FINDINGS

    findings = [f for f in FINDINGS if f in table.columns]
    if findings:
        codes = sum(table[f].to_numpy() << i for i, f in enumerate(findings))
        names = ["+".join(f for i, f in enumerate(findings) if c >> i & 1) or "none" for c in range(2 ** len(findings))]
        return codes, names
    if by_density:
        return (table["label"].to_numpy() * 4 + table["breast_density"].to_numpy() - 1,
                [f"{c} d{d}" for c in CLASS_DIRS for d in range(1, 5)])
    return table["label"].to_numpy(), list(CLASS_DIRS)


def grid_sample(spec, *, per_class: int = 8, by_density: bool = False) -> tuple[np.ndarray, "pd.DataFrame"]:
    """The phantom's first images, just enough that every grid row (:func:`phantom_grid_classes`) has
    ``per_class`` of them or all it has, and their table rows: :func:`write_image_grid` shows a class's
    first images, so this is the grid of the whole phantom, drawn without rendering all of it."""
    from .draw import draw_phantom

    table, chunks = draw_phantom(spec)
    classes, _ = phantom_grid_classes(table, by_density=by_density)
    need = {c: min(per_class, int((classes == c).sum())) for c in np.unique(classes)}
    parts, n = [], 0
    for rows, images in chunks:
        parts.append(images)
        n = rows.stop
        if all(int((classes[:n] == c).sum()) >= k for c, k in need.items()):
            break
    return np.concatenate(parts), table.iloc[:n].reset_index(drop=True)
