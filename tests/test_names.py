"""Run and job folder names (rnnexp/names.py): TensorBoard's run names, so each says what its run is."""

import json

from conftest import TINY, only, run_train

from rnnexp.names import NAME_BYTES, job_folder, run_folder

SEARCH = {"optimizer.lr": "tag(log, interval(1e-4, 1e-2))", "model.hidden_size": "choice(32, 64)"}


def test_a_job_is_named_by_its_swept_values_short_after_its_number():
    grid = ["-m", "model=rnn,lstm,gru", "data.batch_size=64"]
    assert job_folder(2, ["model=gru", "data.batch_size=64"], argv=grid) == "2_model=gru"  # fixed keys left out
    trial = ["optimizer.lr=0.0031622776601683794", "model.hidden_size=64", "data.root=/x", "trial=7"]
    assert job_folder(7, trial, SEARCH, n_trials=20, argv=["-m", "hparams_search=optuna"]) == (
        "07_optimizer.lr=0.003162,model.hidden_size=64"
    )
    assert job_folder(0, ["optimizer.lr=1000000.0"], argv=["-m", "optimizer.lr=0.01,1e6"]) == "0_optimizer.lr=1000000.0"


def test_job_numbers_are_padded_to_the_sweeps_size_so_folders_sort_in_launch_order():
    def names(argv, jobs):
        return [job_folder(num, job, argv=argv) for num, job in enumerate(jobs)]

    seeds = names(
        ["-m", "model=rnn,gru", "seed=range(0,6)"], [[f"model={m}", f"seed={s}"] for m in "ab" for s in range(6)]
    )
    assert seeds[0].startswith("00_") and seeds[11].startswith("11_") and sorted(seeds) == seeds
    assert names(["-m", "experiment=glob(rows_*)"], [["experiment=x"]] * 5)[4].startswith("4_")  # 5 presets
    # a search's size is its n_trials; a search with no n_trials at hand takes 3 digits
    assert job_folder(7, ["optimizer.lr=0.01"], SEARCH, n_trials=200, argv=["-m"]).startswith("007_")
    assert job_folder(7, ["optimizer.lr=0.01"], SEARCH, argv=["-m"]).startswith("007_")


def test_long_values_keep_their_ends_and_stay_apart_and_no_swept_key_is_dropped():
    one = "/work/shared/data/some/very/long/path/to/a/copy/of/mnist-number-one"
    two = one.removesuffix("one") + "two"
    argv = ["-m", f"data.root={one},{two}", "model=lstm,gru"]
    first = job_folder(0, [f"data.root={one}", "model=lstm"], argv=argv)
    second = job_folder(1, [f"data.root={two}", "model=lstm"], argv=argv)
    assert first.endswith("mnist-number-one,model=lstm") and second.endswith("mnist-number-two,model=lstm")
    assert first.split("_", 1)[1] != second.split("_", 1)[1]
    # two values alike at both ends still differ: a hash of the whole stands between head and end
    middle = [f"data.root=/a/{'x' * 60}/{m}/{'y' * 60}" for m in ("p", "q")]
    assert job_folder(0, middle[:1], argv=["-m"]) != job_folder(0, middle[1:], argv=["-m"])


def test_a_name_fits_the_file_systems_bytes_whatever_its_characters():
    accented = job_folder(
        1, ["data.root=/données/" + "é" * 300, "model=lstm"], argv=["-m", "data.root=/a,/b", "model=a,b"]
    )
    assert accented.endswith(",model=lstm") and len(accented.encode()) <= 255
    many = [f"model.setting_{i}=value_{i}" for i in range(40)]  # nothing swept by name: every override
    name = job_folder(1, many, argv=["-m"])
    assert len(name.encode()) <= NAME_BYTES + 2 and name.startswith("1_model.setting_0=") and name.endswith("=value_39")


def test_a_single_run_is_named_by_its_time_and_what_it_is():
    assert run_folder("T", ["data.root=/x", "model.layers=3"], "lstm") == "T_model=lstm,model.layers=3"
    assert run_folder("T", ["experiment=best_rows"], "lstm") == "T_experiment=best_rows"  # the preset says it
    assert run_folder("T", ["model=gru", "resume=/r", "paths.output_dir=/o"], "gru") == "T_model=gru"
    assert run_folder("T", [], None) == "T"


def test_a_sweep_over_long_non_ascii_data_folders_runs_every_job_in_its_own_named_folder(tmp_path, tiny_mnist):
    roots = []
    for name in ("première", "deuxième"):  # two copies of the data, deep under long accented folder names
        root = tmp_path / ("données_" + "é" * 100) / ("très_longue_" + "à" * 100) / name
        root.parent.mkdir(parents=True, exist_ok=True)
        root.symlink_to(tiny_mnist)
        roots.append(str(root))
    proc = run_train(
        "-m", *TINY, f"data.root='{roots[0]}','{roots[1]}'", "model=rnn", "trainer.max_epochs=1",
        data=tiny_mnist, out=tmp_path / "out",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only((tmp_path / "out" / "multirun").iterdir())
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j[:2] for j in jobs] == ["0_", "1_"] and jobs[0].endswith("première") and jobs[1].endswith("deuxième")
    for job in jobs:
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "completed"


def test_a_single_runs_folder_says_what_it_is(tmp_path, tiny_mnist):
    given = ["data.val_size=50", "model=gru", "model.hidden_size=8", "trainer.max_epochs=1"]
    proc = run_train(*given, data=tiny_mnist, out=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only((tmp_path / "runs").iterdir())
    assert run.name.endswith("_" + ",".join(given))
