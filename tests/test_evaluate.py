"""Evaluate and predict from a trained run's checkpoint, on tiny generated data."""

import json
import subprocess

import numpy as np
import pytest
from conftest import TINY, cli, learnable_digits, run_train, scalars


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_mnist):
    out = tmp_path_factory.mktemp("trained")
    result = run_train(*TINY, "model=gru", "trainer.max_epochs=6", data=tiny_mnist, out=out)
    assert result.returncode == 0, result.stderr[-3000:]
    return next((out / "runs").iterdir())


def entry(module: str, *args: str) -> subprocess.CompletedProcess:
    return cli(module, *args)  # `python -m <module> <args>`, in this process


def test_evaluate_reproduces_the_run_and_writes_its_figures(trained):
    checkpoint = json.loads((trained / "metrics.json").read_text())["best_checkpoint"]  # relative to the run
    result = entry("rnnexp.evaluate", f"ckpt_path={trained / checkpoint}")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((trained / "metrics.json").read_text())["test/acc"]
    evaluation = json.loads((trained / "evaluation" / "evaluation.json").read_text())
    assert evaluation["test/acc"] == pytest.approx(recorded, abs=1e-6) and evaluation["checkpoint"] == checkpoint
    per_class = evaluation["per_class"]
    assert list(per_class) == [str(d) for d in range(10)] and all(0 <= a <= 1 for a in per_class.values())
    assert (trained / "evaluation" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (trained / "evaluation" / "misclassified.png").read_bytes()[:4] == b"\x89PNG"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = EventAccumulator(str(trained)).Reload().Tags()["images"]
    assert {"verdict/confusion_matrix", "verdict/misclassified", "val/samples"} <= set(images)
    assert "val/acc" in scalars(trained)  # the run's own TensorBoard, not another one

    # what was evaluated, before the per-class lines; then the most frequent confusions, as the matrix has them
    out = result.stdout.splitlines()
    assert out[:4] == [
        f"run folder  {trained}",
        f"checkpoint  {checkpoint}",
        f"data        mnist, view rows, {evaluation['test_images']} test images in {evaluation['data']['root']}",
        f"accuracy    {100 * recorded:.2f}% ({round(recorded * evaluation['test_images'])} of "
        f"{evaluation['test_images']} right)",
    ]
    assert out[4] == "per class:" and out[5].startswith("  0  ") and out[15].startswith("most frequent confusions")
    matrix = evaluation["confusion_matrix"]
    mistakes = sorted((-matrix[i][j], i, j) for i in range(10) for j in range(10) if i != j and matrix[i][j])[:5]
    assert out[16 : 16 + len(mistakes)] == [f"  {i} -> {j}: {-count}" for count, i, j in mistakes]


def test_the_confusion_matrix_is_coloured_by_each_true_class_share_on_a_log_scale():
    import torch

    from rnnexp.evaluate import confusion_figure, confusions

    counts = torch.tensor([[990, 10, 0], [1, 98, 1], [0, 50, 50]])
    figure = confusion_figure(counts, ["a", "b", "c"], 0.95)
    (image,) = figure.axes[0].images
    shares = np.asarray(image.get_array())
    assert shares[0, 1] == pytest.approx(0.01) and shares[1, 0] == pytest.approx(0.01)  # 10 of 1000 = 1 of 100
    assert shares[2, 2] == pytest.approx(0.5) and shares[0, 0] == pytest.approx(0.99)
    assert type(image.norm).__name__ == "LogNorm"  # a share of 0.01 is not drawn as white beside 0.99
    assert confusions(counts, ["a", "b", "c"], top=3) == ["c -> b: 50", "a -> b: 10", "b -> a: 1"]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "error: ckpt_path: missing; usage: python -m rnnexp.evaluate ckpt_path="),
        (["ckpt_path=/nowhere.ckpt"], "error: ckpt_path=/nowhere.ckpt: no such file"),
        (["ckpt_path={run}", "data=imagenet"], "error: data=imagenet: no such option; choose one of"),
        (["ckpt_path={run}", "data.colour=1"], "error: data.colour: not a data setting"),
        (["ckpt_path={run}", "model.layers=2"], "error: model.layers: not a setting of rnnexp.evaluate"),
        (  # a view of another input size than the model's (the run read rows: 28 pixels a step)
            ["ckpt_path={run}", "data.view=pixels"],
            "error: data.view=pixels: the model reads 28 inputs a step (its run's data.view=rows) and pixels gives 1; "
            "use data.view=rows or data.view=columns, or leave data.view out",
        ),
    ],
)
def test_evaluate_refuses_bad_arguments_in_one_line(trained, args, message):
    result = entry("rnnexp.evaluate", *(a.format(run=trained) for a in args))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


def test_predict_reads_any_image_and_names_the_broken_one(trained, tmp_path):
    from PIL import Image

    images, labels = learnable_digits(3, seed=7)
    white_on_black = tmp_path / "white_on_black.png"
    Image.fromarray(images[0]).save(white_on_black)
    black_on_white = tmp_path / "black_on_white.png"
    Image.fromarray(255 - images[1]).save(black_on_white)
    colour_larger = tmp_path / "colour.jpg"  # in red, as a JPEG (scaling is for real digits: tests/test_mnist.py)
    rgb = np.stack([images[2], images[2] // 4, images[2] // 4], axis=-1)
    Image.fromarray(rgb.astype(np.uint8)).save(colour_larger, quality=95)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image\n")
    missing = tmp_path / "missing.png"

    files = [white_on_black, broken, black_on_white, missing, colour_larger]
    result = entry("rnnexp.predict", f"ckpt_path={trained}", *map(str, files))
    assert result.returncode == 1  # some files failed; the others were still classified
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and errors[0].startswith(f"error: {broken}: not an image")
    assert errors[1] == f"error: {missing}: no such file"
    guesses = {line.split(": ")[0]: line.split(": ")[1].split()[0] for line in result.stdout.strip().splitlines()}
    assert list(guesses) == [str(white_on_black), str(black_on_white), str(colour_larger)]
    assert [guesses[str(f)] for f in (white_on_black, black_on_white, colour_larger)] == [str(k) for k in labels]


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that declares its size and holds no pixels: PIL reads the size before any pixel."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_predict_names_an_image_too_large_to_decode_and_classifies_the_others(trained, tmp_path):
    from PIL import Image

    images, labels = learnable_digits(2, seed=7)
    first, last = tmp_path / "first.png", tmp_path / "last.png"
    Image.fromarray(images[0]).save(first)
    Image.fromarray(images[1]).save(last)
    huge = tmp_path / "huge.png"
    png_header_only(huge, 20000, 20000)  # 400 million pixels: PIL's decompression-bomb check refuses it
    result = entry("rnnexp.predict", f"ckpt_path={trained}", str(first), str(huge), str(last))
    assert result.returncode == 1, result.stderr[-3000:]  # one image failed
    assert "Traceback" not in result.stderr
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith(f"error: {huge}: too large to decode (Image size (400000000 pixels) exceeds limit")
    assert error.endswith("scale it down: the model reads 28x28")
    guesses = {line.split(": ")[0]: line.split(": ")[1].split()[0] for line in result.stdout.strip().splitlines()}
    assert guesses == {str(first): str(labels[0]), str(last): str(labels[1])}


def test_predict_takes_a_28x28_image_as_prepared_and_inverts_a_drawing(tmp_path):
    from PIL import Image

    from rnnexp.predict import read_image

    images, _ = learnable_digits(1, seed=3)
    Image.fromarray(images[0]).save(tmp_path / "digit.png")
    assert np.array_equal(read_image(tmp_path / "digit.png"), images[0])  # 28x28 light on dark: unchanged
    Image.fromarray(255 - images[0]).save(tmp_path / "drawing.png")
    assert np.array_equal(read_image(tmp_path / "drawing.png"), images[0])  # dark on light: inverted


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_predict_prepares_an_image_as_mnist_was_prepared(tmp_path, dark_on_light):
    from PIL import Image

    from rnnexp.predict import read_image

    canvas = np.zeros((80, 200), dtype=np.uint8)  # wide, the stroke off-centre: 40 high, 10 wide
    canvas[5:45, 150:160] = 200
    Image.fromarray(255 - canvas if dark_on_light else canvas).save(tmp_path / "wide.png")
    prepared = read_image(tmp_path / "wide.png")
    rows, columns = np.nonzero(prepared > 25)
    # cropped to the ink and scaled to fit 20x20 keeping its aspect ratio: 20 high, 5 wide, at full contrast
    assert rows.max() - rows.min() + 1 == 20 and columns.max() - columns.min() + 1 == 5 and prepared.max() == 255
    ys, xs = np.indices(prepared.shape)
    mass = prepared.sum()
    centre = ((ys * prepared).sum() / mass, (xs * prepared).sum() / mass)
    assert centre == pytest.approx((13.5, 13.5), abs=0.51)  # placed in 28x28 by its centre of mass


def test_predict_scales_16_bit_images_rather_than_clipping_them(tmp_path):
    from PIL import Image

    from rnnexp.predict import read_image

    canvas = np.zeros((60, 90), dtype=np.uint8)
    canvas[10:50, 20:30], canvas[10:20, 30:60] = 120, 250  # two gray levels: clipped at 255, they would be one
    Image.fromarray(canvas).save(tmp_path / "8bit.png")
    Image.fromarray(canvas.astype(np.uint16) * 257).save(tmp_path / "16bit.png")
    assert Image.open(tmp_path / "16bit.png").mode == "I;16"
    eight = read_image(tmp_path / "8bit.png")
    assert np.array_equal(read_image(tmp_path / "16bit.png"), eight) and len(np.unique(eight[eight > 50])) > 2


def test_evaluate_on_another_data_set_keeps_the_runs_view(trained, tiny_mnist):
    result = entry("rnnexp.evaluate", f"ckpt_path={trained}", "data=fashion_mnist", f"data.root={tiny_mnist}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((trained / "evaluation-fashion_mnist" / "evaluation.json").read_text())
    assert evaluation["data"]["dataset"] == "fashion_mnist" and evaluation["data"]["view"] == "rows"
    assert list(evaluation["per_class"])[:2] == ["T-shirt/top", "Trouser"]  # its class names
