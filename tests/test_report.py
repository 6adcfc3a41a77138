"""The comparison report: rows for every run (failed ones too), seed statistics, CSV and PNG."""

import csv
import json
import os
import statistics

import pytest
import yaml
from conftest import TINY, run_train

from rnnexp import report
from rnnexp.record import HEARTBEAT, HEARTBEAT_S


def fake_run(folder, seed=1, status="completed", test_acc=0.9, val_acc=0.9, **metrics):
    """A run folder as train.py leaves it; test_acc=None: run with test=false (no test/acc recorded)."""
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "model": {"cell": "lstm", "layers": 1, "hidden_size": 8},
        "trainer": {"default_root_dir": str(folder)},  # differs per run, yet the setting is the same
        "reference": {"accuracy": 0.95, "measured_on": "x"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if status:
        record = {"status": status, "val/acc_best": val_acc, "train_time_s": 1.0, **metrics}
        if test_acc is not None:
            record["test/acc"] = test_acc
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


def test_how_a_run_was_started_does_not_split_its_seeds(tmp_path):
    for seed in (1, 2):
        fake_run(tmp_path / f"{seed - 1}_seed={seed}", seed=seed)
    for seed in (3, 4):  # first started by resume= of the sweep (config.yaml said so before it was left out)
        run = fake_run(tmp_path / f"{seed - 1}_seed={seed}", seed=seed)
        config = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**config, "resume": str(tmp_path)}))
    (summary,) = report.summarize(report.find_runs([tmp_path]))
    assert summary["n"] == 4


def test_unfinished_runs_are_listed_as_such(tmp_path):
    fake_run(tmp_path / "0_a", status=None)  # rejected before training: no metrics.json
    fake_run(tmp_path / "1_b", status="running", host=report.socket.gethostname(), pid=2**22 + 12345)
    statuses = [r.row()["status"] for r in report.find_runs([tmp_path])]
    assert statuses == ["not started", "killed"]


def test_a_run_on_another_host_is_killed_once_its_heartbeat_went_stale(tmp_path):
    for name, age in (("0_alive", 0), ("1_killed", 10 * HEARTBEAT_S), ("2_before_heartbeats", None)):
        folder = fake_run(tmp_path / name, status="running", host="node-elsewhere", pid=1)
        if age is not None:
            (folder / HEARTBEAT).touch()
            beat = os.stat(folder / HEARTBEAT).st_mtime - age
            os.utime(folder / HEARTBEAT, (beat, beat))
    statuses = [r.row()["status"] for r in report.find_runs([tmp_path])]
    assert statuses == ["running", "killed", "running"]  # without a heartbeat: its record's word


def test_a_pruned_trial_is_listed_as_pruned_and_not_averaged_with_finished_repeats(tmp_path):
    fake_run(tmp_path / "0_a", seed=0, val_acc=0.9)
    fake_run(tmp_path / "1_a", seed=1, val_acc=0.8)
    fake_run(tmp_path / "2_a", seed=2, status="pruned", test_acc=None, val_acc=0.2, epochs=1.0)
    runs = report.find_runs([tmp_path])
    assert [r.row()["status"] for r in runs] == ["completed", "completed", "pruned"]
    (summary,) = report.summarize(runs)
    assert summary["n"] == 2 and summary["val_acc_best_mean"] == pytest.approx(0.85)


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
    completed = json.loads((sweep / records[0]["folder"] / "metrics.json").read_text())
    assert float(records[0]["test_acc"]) == round(completed["test/acc"], 4) and records[1]["test_acc"] == ""
    assert (sweep / "report.md").read_text() == table.split("wrote ")[0].rstrip("\n") + "\n"
    assert (sweep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rejects_a_folder_without_runs(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: no runs (folders with .hydra/) in {tmp_path}")


@pytest.mark.parametrize(
    "file, content, reason",
    [
        ("metrics.json", '{\n  "status":\n', "metrics.json: Expecting value: line 3 column 1"),  # cut short
        ("metrics.json", "", "metrics.json: Expecting value: line 1 column 1"),
        ("metrics.json", "[0.9]", "metrics.json: list, not a mapping"),
        ("metrics.json", b"\xff\xfe", "metrics.json: 'utf-8' codec can't decode byte 0xff in position 0"),
        ("metrics.json", None, "metrics.json: Is a directory"),
        ("config.yaml", "seed: [1, 2\nmodel: {}\n", "config.yaml: expected ',' or ']', but got ':': line 2 column 6"),
        ("config.yaml", "", "config.yaml: empty, not a mapping"),
        ("config.yaml", "- 1\n- 2\n", "config.yaml: list, not a mapping"),
    ],
)
def test_an_unreadable_run_is_a_row_saying_why(tmp_path, file, content, reason):
    run = fake_run(tmp_path / "0_a")
    path = run / file
    if content is None:
        path.unlink()
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    (found,) = report.find_runs([tmp_path])
    status = found.row()["status"]
    assert status.startswith(f"unreadable ({reason}") and status.endswith(")") and "\n" not in status


def test_one_unreadable_run_leaves_the_others_reported(tmp_path, capsys):
    for i, acc in enumerate([0.91, 0.93, 0.5, 0.97]):
        fake_run(tmp_path / f"{i}_seed={i}", seed=i, test_acc=acc)
    (tmp_path / "2_seed=2" / "metrics.json").write_text('{"status": "completed", "test/acc": 0.5')  # cut short
    report.main([str(tmp_path)])
    runs_table = capsys.readouterr().out.partition("Over seeds")[0]
    rows = [line for line in runs_table.splitlines() if line.startswith("| seed=")]
    # ranked: the runs with a score first (all equal here: in their order), the unreadable one after them
    assert len(rows) == 4 and "| unreadable (metrics.json: Expecting ',' delimiter: line 1" in rows[3]
    assert all("| completed |" in row for row in rows[:3])
    (summary,) = report.summarize(report.find_runs([tmp_path]))
    assert summary["n"] == 3 and summary["test_acc_mean"] == pytest.approx(statistics.mean([0.91, 0.93, 0.97]))
    with open(tmp_path / "report.csv") as f:
        assert [r["status"][:10] for r in csv.DictReader(f)] == ["completed", "completed", "completed", "unreadable"]
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_without_a_test_score_are_summarized_over_what_they_have(tmp_path, capsys):
    for i, acc in enumerate([0.91, 0.93, 0.97]):
        fake_run(tmp_path / f"{i}_seed={i}", seed=i, test_acc=None, val_acc=acc)  # trained with test=false
    report.main([str(tmp_path), f"out={tmp_path / 'out'}"])
    runs_table, _, seeds_table = capsys.readouterr().out.partition("Over seeds")
    (same,) = [line for line in runs_table.splitlines() if line.startswith("Same in every run: ")]
    assert "test_acc=-, published=95.00, diff=-" in same  # the same in all three: said once, not as columns
    (line,) = [line for line in seeds_table.splitlines() if line.startswith("| defaults")]  # seed is all that varies
    mean, std = statistics.mean([91.0, 93.0, 97.0]), statistics.stdev([91.0, 93.0, 97.0])
    assert line.split(" | ")[2:4] == ["-", f"{mean:.2f} ± {std:.2f}"] and line.endswith("| 95.00 | - |")


def test_test_statistics_cover_the_repeats_that_have_a_test_score(tmp_path):
    for i, acc in enumerate([0.91, None, 0.97]):
        fake_run(tmp_path / f"{i}_seed={i}", seed=i, test_acc=acc)
    (summary,) = report.summarize(report.find_runs([tmp_path]))
    assert summary["n"] == 3 and summary["test_acc_n"] == 2 and summary["val_acc_best_n"] == 3
    assert summary["test_acc_mean"] == pytest.approx(0.94) and summary["diff"] == pytest.approx(0.94 - 0.95)
    assert "| 94.00 ± 4.24 [91.00, 97.00] (2 of 3) |" in report.markdown([], [summary])


@pytest.mark.parametrize("where, reason", [("file", "a file, not a folder"), ("file/report", "Not a directory")])
def test_an_unwritable_out_is_one_line_naming_it(tmp_path, capsys, where, reason):
    run = fake_run(tmp_path / "runs" / "0_a")
    (tmp_path / "file").write_text("not a folder")  # root ignores chmod; a file in the way stops it too
    out = tmp_path / where
    assert report.main([str(run), f"out={out}"]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: cannot write the report to {out}: {reason}; give out=<a writable folder>\n"
    assert "| completed |" in captured.out  # the table was shown all the same


def cells(line: str) -> list[str]:
    """A Markdown table row's cells."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_runs_are_ranked_best_first_with_constant_columns_left_out_and_said_once(tmp_path, capsys):
    for i, (acc, hidden) in enumerate([(0.95, 8), (0.98420000076, 16), (0.9, 32)]):
        run = fake_run(tmp_path / f"{i}_model.hidden_size={hidden},seed={i}", seed=1, test_acc=0.9, val_acc=acc,
                       epochs=3.0, params=100 * hidden)  # fmt: skip
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["model"]["hidden_size"] = hidden
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    report.main([str(tmp_path)])
    table = capsys.readouterr().out
    assert "Over seeds" not in table  # three settings, one seed each
    lines = table.splitlines()
    header = cells(next(line for line in lines if line.startswith("| run |")))
    rows = [cells(line) for line in lines if line.startswith("| model.")]
    # the best by val/acc_best (the runs' optimized_metric by default) first, and marked
    assert [row[0] for row in rows] == [
        "model.hidden_size=16,seed=1 (best)", "model.hidden_size=8,seed=0", "model.hidden_size=32,seed=2"
    ]  # fmt: skip
    # what differs stays (hidden, params); what all share is one line; numbers at the precision they carry
    assert header == ["run", "hidden", "params", "val_acc_best %"]
    assert [row[3] for row in rows] == ["98.42", "95.00", "90.00"] and "0.9842000" not in table
    same = next(line for line in lines if line.startswith("Same in every run: "))
    assert "seed=1" in same and "cell=lstm" in same and "layers=1" in same and "epochs=3," in same
    assert "test_acc=90.00" in same
    with open(tmp_path / "report.csv") as f:  # every column, best first, rounded where written
        records = list(csv.DictReader(f))
    assert [r["val_acc_best"] for r in records] == ["0.9842", "0.95", "0.9"] and records[0]["seed"] == "1"


def test_a_seed_group_is_named_by_what_its_runs_share_and_the_best_group_comes_first(tmp_path):
    jobs = [("model=rnn", 1, 0.9, 0.3), ("model=rnn", 2, 0.92, 0.32), ("model=gru", 1, 0.97, 0.5),
            ("model=gru", 2, 0.95, 0.4)]  # fmt: skip
    for i, (name, seed, acc, loss) in enumerate(jobs):
        run = fake_run(tmp_path / f"{i}_{name},seed={seed}", seed=seed, val_acc=acc, **{"val/loss": loss})
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["model"]["cell"] = name.split("=")[1]
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    runs = report.find_runs([tmp_path])
    summary = report.summarize(runs, "val/acc_best")
    assert [(s["run"], s["n"]) for s in summary] == [("model=gru", 2), ("model=rnn", 2)]  # not model=gru,seed=1
    assert summary[0]["score"] == pytest.approx(0.96)
    assert "| model=gru (best) | 2 |" in report.markdown([], summary)
    # where the runs minimized a loss, the lowest mean comes first
    assert [s["run"] for s in report.summarize(runs, "val/loss")] == ["model=rnn", "model=gru"]
    assert [r.dir.name for r in report.rank(runs, "val/loss")][:2] == ["0_model=rnn,seed=1", "1_model=rnn,seed=2"]


def test_the_report_takes_settings_as_key_value_like_every_entry_point(tmp_path, capsys):
    job = fake_run(tmp_path / "sweep" / "0_model=rnn")  # a folder whose name holds `=` is a folder
    assert report.main([str(job), f"out={tmp_path / 'out'}"]) == 0 and (tmp_path / "out" / "report.md").is_file()
    assert report.main([str(job), "outt=x"]) == 1
    assert capsys.readouterr().err.startswith("error: outt: not a setting of rnnexp.report")
    assert report.main([str(job), "out="]) == 1
    assert capsys.readouterr().err.startswith("error: out=: give a folder")
    assert report.main([str(tmp_path / "nowhere")]) == 1
    assert f"error: no such folder: {tmp_path / 'nowhere'}" in capsys.readouterr().err


def test_a_preset_without_a_published_result_has_no_published_line(tmp_path):
    """A preset of rnnexp's own (rows_lnlstm) says in reference.measured_on where our numbers are, with
    reference.accuracy null: the report names where published results were measured only for those it has."""
    for seed, accuracy in ((1, None), (2, 0.95)):
        run = fake_run(tmp_path / f"{seed - 1}_seed={seed}", seed=seed)
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["reference"] = {"accuracy": accuracy, "measured_on": f"note {seed}"}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    text = report.markdown([run.row() for run in report.find_runs([tmp_path])], [])
    assert "Published results were measured on: " in text and "note 2" in text and "note 1" not in text, text
