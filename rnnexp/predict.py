"""Classify images of your own with a trained run.

    python -m rnnexp.predict ckpt_path=outputs/runs/<date_time> digit.png [more.png ...]

Each image, grayscale or colour, of any size, is brought to what the model was trained on: padded
to a square with its background, scaled to 28x28, and, if it is dark on light (a drawing on paper),
inverted to light on dark as MNIST's digits are; then read as the run's view of its data. For each
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


def read_image(path: str | Path) -> np.ndarray:
    """A 28x28 uint8 image, light on dark, from any image file PIL reads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
            if image.mode in ("RGBA", "LA", "P"):  # transparent parts: over white, as paper
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(background, image)
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image") from None
    except (Image.DecompressionBombError, MemoryError) as err:  # PIL's check of the size its header declares
        raise DataError(f"{path}: too large to decode ({_first(err)}); scale it down: the model reads 28x28") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not an image PIL can read ({err})") from err
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = int(np.median(border))
    if background > 127:  # dark on light: make it light on dark
        gray, background = 255 - gray, 255 - background
    height, width = gray.shape
    side = max(height, width)
    square = np.full((side, side), background, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = gray
    resized = Image.fromarray(square).resize(
        (SIDE, SIDE), Image.Resampling.LANCZOS if side > SIDE else Image.Resampling.BILINEAR
    )
    return np.array(resized, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants


def predict(argv: list[str]) -> int:
    import torch
    from hydra.utils import instantiate

    from rnnexp.checkpoint import autocast, restore

    given = [a for a in argv if a.startswith("ckpt_path=")]
    files = [a for a in argv if not a.startswith("ckpt_path=")]
    if not given or not files:
        raise ConfigError(f"{'ckpt_path: missing' if not given else 'no image given'}; usage: {USAGE}")
    config, model, _ = restore(given[-1].split("=", 1)[1])
    datamodule = instantiate(config["data"], seed=config["seed"])  # its view and classes; no data read
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
