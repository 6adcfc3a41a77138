"""The comparison report: rows for every run (failed ones too), seed statistics, CSV and PNG."""

import csv
import json
import statistics

import pytest
import yaml
from conftest import TINY, run_train

from rnnexp import report


def fake_run(folder, seed=1, status="completed", test_acc=0.9, **metrics):
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "model": {"cell": "lstm", "layers": 1, "hidden_size": 8},
        "trainer": {"default_root_dir": str(folder)},  # differs per run, yet the setting is the same
        "reference": {"accuracy": 0.95, "measured_on": "x"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if status:
        record = {"status": status, "test/acc": test_acc, "val/acc_best": test_acc, "train_time_s": 1.0, **metrics}
        (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def test_seeds_of_one_setting_get_mean_and_spread(tmp_path):
    accs = [0.91, 0.93, 0.98]
    for i, acc in enumerate(accs):
        fake_run(tmp_path / f"{i}_seed={i}", seed=i, test_acc=acc)
    fake_run(tmp_path / "3_seed=9", seed=9, status="failed", test_acc=0.1)  # not averaged in
    runs = report.find_runs([tmp_path])
    assert [r.dir.name for r in runs] == ["0_seed=0", "1_seed=1", "2_seed=2", "3_seed=9"]
    (summary,) = report.summarize(runs)
    assert summary["n"] == 3 and summary["test_acc_mean"] == pytest.approx(statistics.mean(accs))
    assert summary["test_acc_std"] == pytest.approx(statistics.stdev(accs))
    assert summary["diff"] == pytest.approx(statistics.mean(accs) - 0.95)


def test_unfinished_runs_are_listed_as_such(tmp_path):
    fake_run(tmp_path / "0_a", status=None)  # rejected before training: no metrics.json
    fake_run(tmp_path / "1_b", status="running", host=report.socket.gethostname(), pid=2**22 + 12345)
    statuses = [r.row()["status"] for r in report.find_runs([tmp_path])]
    assert statuses == ["not started", "killed"]


def test_report_on_a_sweep_with_a_failed_run(tmp_path, tiny_mnist, capsys):
    diverge = ["model=rnn", "model.nonlinearity=relu", "optimizer=sgd", "grad_clip=null", "scheduler=none"]
    result = run_train("-m", *TINY, *diverge, "optimizer.lr=0.03,1e6", data=tiny_mnist, out=tmp_path)
    assert result.returncode != 0  # one job diverged; the sweep still ran both
    sweep = next((tmp_path / "multirun").iterdir())

    report.main([str(sweep)])
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| optimizer.lr=")]
    assert len(rows) == 2 and "| completed |" in rows[0] and "| failed |" in rows[1]

    with open(sweep / "report.csv") as f:
        records = list(csv.DictReader(f))
    assert [r["status"] for r in records] == ["completed", "failed"]
    assert float(records[0]["test_acc"]) > 0.1 and records[1]["test_acc"] == ""
    assert (sweep / "report.md").read_text() == table.split("wrote ")[0].rstrip("\n") + "\n"
    assert (sweep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rejects_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        report.main([str(tmp_path)])
    assert "no runs" in capsys.readouterr().err
