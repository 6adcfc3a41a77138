"""Classify images of your own with a trained run.

    python -m rnnexp.predict ckpt_path=outputs/runs/<run> digit.png [more.png ...]

Each image, grayscale or colour (8 or 16 bits), of any size, is brought to what the model was trained
on, as MNIST's digits were prepared: inverted to light on dark if it is dark on light (a drawing on
paper), cropped to its ink, scaled to fit 20x20 keeping its aspect ratio and placed in 28x28 with its
centre of mass at the centre (an image of 28x28 is taken as prepared); then read as the run's view
of its data. For each
image the three likeliest classes are printed with their probabilities. A path that cannot be read
as an image gets one `error:` line and the others are still classified; the exit code says whether
any failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rnnexp import run
from rnnexp.errors import ConfigError, DataError

USAGE = "python -m rnnexp.predict ckpt_path=<checkpoint or run folder> image.png [more.png ...]"
SIDE = 28


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


BOX = 20  # MNIST's digits were scaled to fit 20x20, then placed in 28x28 by their centre of mass


def read_image(path: str | Path) -> np.ndarray:
    """A 28x28 uint8 image, light on dark, from any image file PIL reads, prepared as MNIST's digits
    were (`prepare`); an image of 28x28 already is taken as prepared (only made light on dark)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            gray = grayscale(opened)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image") from None
    except (Image.DecompressionBombError, MemoryError) as err:  # PIL's check of the size its header declares
        raise DataError(f"{path}: too large to decode ({_first(err)}); scale it down: the model reads 28x28") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not an image PIL can read ({err})") from err
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 127.5:  # dark on light (a drawing on paper): make it light on dark
        gray, background = 255.0 - gray, 255.0 - background
    if gray.shape == (SIDE, SIDE):  # MNIST's size: a digit saved from it, or prepared as it was
        return np.rint(gray).astype(np.uint8)
    return prepare(np.clip(gray - background, 0, None))


def grayscale(image) -> np.ndarray:
    """The image's gray levels as floats in 0..255: 16-bit and 32-bit integer and float images scaled
    from their range (not clipped at 255, as PIL's conversion to "L" would), transparent parts over
    white (paper), colour by PIL's luminance."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
    if image.mode in ("I", "F"):  # 32-bit integers or floats: 8 or 16 bits used, or a float in 0..1
        values = np.asarray(image, dtype=np.float64)
        top = values.max(initial=0.0)
        full = (
            1.0 if image.mode == "F" and top <= 1.0 else 255.0 if top <= 255.0 else 65535.0 if top <= 65535.0 else top
        )
        return np.clip(values, 0, None) * (255.0 / full)
    if image.mode in ("RGBA", "LA", "PA", "P", "La", "RGBa") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.float64)


def prepare(ink: np.ndarray) -> np.ndarray:
    """MNIST's preparation of a digit (LeCun et al.), ink light on a background of 0: cropped to its
    ink, scaled to fit 20x20 keeping its aspect ratio (anti-aliased), its contrast stretched to 0..255,
    and placed in 28x28 with its centre of mass at the centre."""
    from PIL import Image

    top = ink.max(initial=0.0)
    if top <= 0:  # nothing drawn
        return np.zeros((SIDE, SIDE), dtype=np.uint8)
    rows, columns = np.nonzero(ink > 0.1 * top)  # faint noise left out of the crop
    crop = ink[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    box = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))
    box = np.clip(box, 0, None)
    box = box * (255.0 / box.max()) if box.max() > 0 else box
    total = box.sum()
    ys, xs = np.indices(box.shape)
    centre = ((ys * box).sum() / total, (xs * box).sum() / total)  # the box's centre of mass
    canvas = np.zeros((SIDE, SIDE))
    top_left = [round(SIDE / 2 - 0.5 - c) for c in centre]  # the mass's centre on the canvas's (13.5, 13.5)
    (y0, x0), (h, w) = top_left, box.shape
    ya, xa, yb, xb = max(0, y0), max(0, x0), min(SIDE, y0 + h), min(SIDE, x0 + w)
    canvas[ya:yb, xa:xb] = box[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return np.rint(canvas).astype(np.uint8)


def predict(argv: list[str]) -> int:
    import torch

    from rnnexp import build
    from rnnexp.checkpoint import autocast, restore

    given = [a for a in argv if a.startswith("ckpt_path=")]
    files = [a for a in argv if not a.startswith("ckpt_path=")]
    if not given or not files:
        raise ConfigError(f"{'ckpt_path: missing' if not given else 'no image given'}; usage: {USAGE}")
    config, model, _ = restore(given[-1].split("=", 1)[1])
    datamodule = build.datamodule(config)  # its view and classes; no data read
    failed = 0
    for path in files:
        try:
            image = read_image(path)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        with torch.no_grad(), autocast(config):  # the precision the run tested in
            probs = model(datamodule.inputs(torch.from_numpy(image)[None])).float().softmax(-1)[0]
        top = probs.topk(min(3, len(probs)))
        guesses = ", ".join(
            f"{datamodule.classes[i]} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist())
        )
        print(f"{path}: {guesses}")
    return failed


def main(argv: list[str] | None = None) -> int:
    """`python -m rnnexp.predict <argv>` (default: this process's command line); returns the exit code:
    1 where an image could not be read."""

    def app(args: list[str]) -> None:
        if predict(args):
            raise SystemExit(1)

    return run.main(app, argv)


if __name__ == "__main__":
    raise SystemExit(main())
