"""One short run on real MNIST: the default model must learn the real thing."""

import json

from conftest import run_train


def test_lstm128_reaches_95_percent_on_the_full_test_set_after_one_epoch(tmp_path, real_mnist):
    result = run_train("model=lstm", "model.hidden_size=128", "trainer.max_epochs=1", data=real_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next((tmp_path / "runs").glob("*/metrics.json")).read_text())
    assert metrics["steps"] == 430  # 55,000 training images in batches of 128
    assert metrics["test/acc"] >= 0.95, metrics
