"""Short runs on real MNIST: the default model must learn the real thing, and a trained run's
evaluation and predictions must agree with it."""

import json
import subprocess

import pytest
from conftest import cli, run_train

from rnnexp.data.datasets import MNIST
from rnnexp.data.idx import load


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_mnist):
    out = tmp_path_factory.mktemp("real")
    result = run_train("model=lstm", "model.hidden_size=128", "trainer.max_epochs=1", data=real_mnist, out=out)
    assert result.returncode == 0, result.stderr[-3000:]
    return next((out / "runs").iterdir())


def entry(module: str, *args: str) -> subprocess.CompletedProcess:
    return cli(module, *args)  # `python -m <module> <args>`, in this process


def test_lstm128_reaches_95_percent_on_the_full_test_set_after_one_epoch(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["steps"] == 430  # 55,000 training images in batches of 128
    assert metrics["test/acc"] >= 0.95, metrics


def test_evaluate_reproduces_the_recorded_test_accuracy(trained):
    result = entry("rnnexp.evaluate", f"ckpt_path={trained}")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((trained / "metrics.json").read_text())["test/acc"]
    evaluation = json.loads((trained / "evaluation" / "evaluation.json").read_text())
    assert evaluation["test/acc"] == pytest.approx(recorded, abs=1e-6) and evaluation["test_images"] == 10000
    assert f"test accuracy {recorded:.4f} on 10000 test images" in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines()[2:12]] == [str(d) for d in range(10)]
    for png in ("confusion_matrix.png", "misclassified.png"):
        assert (trained / "evaluation" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(map(sum, evaluation["confusion_matrix"])) == 10000


def test_predict_classifies_real_test_digits_saved_as_png(trained, real_mnist, tmp_path):
    from PIL import Image

    arrays = load(real_mnist, MNIST, download_missing=False)
    files = []
    for k in range(10):
        files.append(tmp_path / f"digit{k}_is_{arrays['test_labels'][k]}.png")
        Image.fromarray(arrays["test_images"][k]).save(files[-1])
    result = entry("rnnexp.predict", f"ckpt_path={trained}", *map(str, files))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 10
    right = sum(line.split(": ")[1].split()[0] == line.split("_is_")[1][0] for line in lines)
    assert right >= 8, lines
    probabilities = [float(p) for p in lines[0].split(": ")[1].replace(",", "").split()[1::2]]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.001


def test_fashion_mnist_trains_on_its_own_files(tmp_path, real_fashion_mnist):
    overrides = ["data=fashion_mnist", f"data.root={real_fashion_mnist}", "model.hidden_size=32"]
    result = run_train(*overrides, "trainer.max_steps=100", data=real_fashion_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = next((tmp_path / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 100
    assert metrics["test/acc"] > 0.5, metrics  # 10 classes of clothing: far above chance after 100 steps
    assert "dataset: fashion_mnist" in (run / "config.yaml").read_text()
