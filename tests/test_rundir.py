"""--out safety and the run lock: flowforge never deletes or overwrites what it did not write,
and a second writer on a run is refused."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_harness import SMALL, assert_one_line, cli, file_hashes, refused, run, subprocess_cli  # noqa: F401

from flowforge.errors import FlowforgeError
from flowforge.training.rundir import LOCK, MANIFEST, run_lock

TRAIN = ["train", "--data", "moons", "--steps", 20, "--eval-every", 10, *SMALL]


def _user_project(tmp_path):
    """The issue's directory: a config.json that is not flowforge's, the data and the user's notes."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "config.json").write_text("{}")
    np.savetxt(project / "data.csv", np.random.default_rng(0).normal(size=(50, 2)), delimiter=",")
    (project / "notes.txt").write_text("notes\n")
    return project


def test_force_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    project = _user_project(tmp_path)
    refused(capsys, 1, [*TRAIN, "--data", project / "data.csv", "--out", project, "--force"],
            ("not a flowforge run directory",), project)
    assert not (project / LOCK).exists()


def test_fresh_run_into_a_non_empty_directory_is_refused(tmp_path, capsys):
    folder = tmp_path / "plots-of-mine"
    folder.mkdir()
    (folder / "results.json").write_text('{"mine": true}')
    (folder / "metrics.jsonl").write_text("my own\n")
    for force in ([], ["--force"]):
        refused(capsys, 1, [*TRAIN, "--out", folder, *force], ("holds no flowforge run",), folder)


def test_force_replaces_only_flowforges_files_of_a_real_run(run, capsys):
    (run / "notes.txt").write_text("mine\n")
    (run / "plots").mkdir(exist_ok=True)
    (run / "plots" / "my_figure.png").write_bytes(b"not flowforge's")
    mine = file_hashes(run / "notes.txt", run / "plots" / "my_figure.png")
    old_config = json.loads((run / "config.json").read_text())
    code, _, err = cli(capsys, *TRAIN, "--seed", 5, "--out", run, "--force")
    assert code == 0, err
    assert file_hashes(run / "notes.txt", run / "plots" / "my_figure.png") == mine
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == 5 != old_config["train"]["seed"] and "flowforge" in config
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]  # the old run's records are gone, not appended to
    assert json.loads((run / "results.json").read_text())["steps"] == 20


def test_plots_are_listed_in_the_manifest_and_replaced_by_force(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = cli(capsys, *TRAIN, "--out", out, "--plots")
    assert code == 0, err
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert "plots/flow.png" in listed and "config.json" in listed
    code, _, err = cli(capsys, *TRAIN, "--out", out, "--force")  # --no-plots: the old figures go
    assert code == 0, err
    assert not (out / "plots").exists()


def test_a_refused_run_leaves_no_directory_behind(tmp_path, capsys):
    refused(capsys, 1, [*TRAIN, "--data", tmp_path / "missing.csv", "--out", tmp_path / "new"], ("no such file",))
    assert not (tmp_path / "new").exists()


def test_lock_refuses_a_second_holder_and_names_the_pid(tmp_path):
    tmp_path.joinpath("r").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from flowforge.training.rundir import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)"), str(tmp_path / "r")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FlowforgeError, match=f"PID {holder.pid}"):
            with run_lock(tmp_path / "r"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match="no longer running"), run_lock(tmp_path / "r"):  # the kernel released it
        assert (tmp_path / "r" / LOCK).read_text().strip() == str(os.getpid())
    assert (tmp_path / "r" / LOCK).read_text() == ""  # released on exit


def test_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path):
            raise RuntimeError("boom")
    with run_lock(tmp_path):
        pass


def test_stale_lock_of_a_killed_run_is_detected_and_taken_over(run, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK).write_text(f"{dead.pid}\n")
    code, _, err = cli(capsys, "train", "--resume", run, "--steps", "305", "--no-progress", "--no-plots")
    assert code == 0
    assert_one_line(err, "warning", f"PID {dead.pid}", "no longer running")


def _wait_for_lock(run_dir, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        lock = run_dir / LOCK
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return
        assert proc.poll() is None, "the first writer ended before it took the lock"
        time.sleep(0.02)
    raise AssertionError("the first writer never took the lock")


SLOW_WRITER = ("import sys, time\nfrom flowforge.training import loop\nappend = loop.append_metrics\n"
               "loop.append_metrics = lambda *args: (time.sleep(0.5), append(*args))\n"
               "from flowforge.cli import main\nsys.exit(main(sys.argv[1:]))")  # a real run, paced: ≥ 10 s


@pytest.mark.parametrize("second", [["--force", "--seed", 9], ["--resume"]])
def test_two_writers_on_one_run_exactly_one_proceeds(tmp_path, second):
    out = tmp_path / "r"
    first = subprocess.Popen([sys.executable, "-c", SLOW_WRITER,
                              *map(str, [*TRAIN, "--steps", 200, "--seed", 1, "--out", out])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_lock(out, first)
    args = ["train", "--resume", out, "--no-progress", "--no-plots"] if second == ["--resume"] else \
        [*TRAIN, "--out", out, *second]
    other = subprocess_cli(*args)
    still_running = first.poll() is None
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert other.returncode == 1
    assert_one_line(other.stderr, "error", f"PID {first.pid}", "in use")
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 201, 10))  # strictly increasing, written by one run
    config, results = (json.loads((out / n).read_text()) for n in ("config.json", "results.json"))
    assert config["train"]["seed"] == 1 and results["steps"] == 200
    assert still_running  # the refusal came while the first writer was at work


def test_sigkill_leaves_no_temporary_and_a_lock_the_next_run_takes(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "flowforge", *map(str, [*TRAIN, "--steps", 2000, "--out", out])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_lock(out, proc)
    deadline = time.time() + 60
    while not (out / "checkpoint.safetensors").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess_cli("train", "--resume", out, "--steps", 40, "--no-progress", "--no-plots")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.glob(".*tmp*"))


def test_a_metrics_line_cut_off_mid_write_is_read_without_it(run, capsys):
    # a run killed while appending left half a line: plot and --resume stopped with a JSONDecodeError
    steps = json.loads((run / "config.json").read_text())["train"]["steps"]
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 99999, "train_n')
    code, _, err = cli(capsys, "plot", run)
    assert code == 0 and "its last line was cut off" in err, err
    code, _, err = cli(capsys, "train", "--resume", run, "--steps", steps + 10, "--no-progress", "--no-plots")
    assert code == 0 and "its last line was cut off" in err, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == steps + 10 and all(r["step"] != 99999 for r in records)
    for damaged in ("not a record", '{"note": 1}', '{"step": "x"}'):  # damaged inside: refused, nothing changed
        (run / "metrics.jsonl").write_text(f'{{"step": 1}}\n{damaged}\n{{"step": 2}}\n')
        refused(capsys, 1, ["plot", run], ("metrics.jsonl: line 2 is not a metrics record",), run)
        refused(capsys, 1, ["train", "--resume", run, "--steps", steps + 50, "--no-progress", "--no-plots"],
                ("metrics.jsonl: line 2 is not a metrics record",), run)  # results.json and config.json kept


def test_resume_replaces_a_metrics_link_instead_of_writing_through_it(run, capsys, tmp_path):
    # --resume rewrote the user's file the link pointed at (dropping its later lines)
    mine = tmp_path / "my_log.jsonl"
    mine.write_text('{"step": 1}\n{"step": 900000}\n')
    before = file_hashes(mine)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(mine)
    steps = json.loads((run / "config.json").read_text())["train"]["steps"]
    code, _, err = cli(capsys, "train", "--resume", run, "--steps", steps + 10, "--no-progress", "--no-plots")
    assert code == 0, err
    assert file_hashes(mine) == before and not (run / "metrics.jsonl").is_symlink()


def test_plot_refuses_a_plots_folder_that_links_elsewhere(run, capsys, tmp_path):
    # plot replaced the user's own figures in the folder the link pointed at
    mine = tmp_path / "my_figures"
    mine.mkdir()
    (mine / "training_curve.png").write_bytes(b"my own figure")
    (run / "plots").symlink_to(mine, target_is_directory=True)
    refused(capsys, 1, ["plot", run], ("plots is a link", "only into a plots folder of its own"), mine)
    steps = json.loads((run / "config.json").read_text())["train"]["steps"]
    refused(capsys, 1, ["train", "--resume", run, "--steps", steps + 10, "--no-progress", "--plots"],
            ("plots is a link",), mine, run / "metrics.jsonl", run / "checkpoint.safetensors")  # before training
    before = file_hashes(mine)
    code, _, err = cli(capsys, "train", "--resume", run, "--steps", steps + 10, "--no-progress", "--no-plots")
    assert code == 0 and file_hashes(mine) == before, err  # no figures: the link is not in the way
