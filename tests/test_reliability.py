"""Distributed training matches one process; a SIGKILLed run resumes to the same result."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

SMALL = ["--layers", "2", "--hidden", "16", "--depth", "1", "--no-plots", "--no-progress"]


def flowforge(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "flowforge", *map(str, args)], capture_output=True,
                          text=True, **kwargs)


def metrics_without_time(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    # float32 networks: bf16 matrix kernels may round differently for 64- and 32-row batches,
    # which would blur a float-tolerance comparison of the two runs.
    common = ["train", "--data", "moons", "--steps", 30, "--eval-every", 10, "--batch-size", 64, *SMALL,
              "--model-option", "mixed_precision=false"]
    one = flowforge(*common, "--out", tmp_path / "one")
    two = flowforge(*common, "--out", tmp_path / "two", "--nproc", 2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    w1 = load_file(str(tmp_path / "one" / "checkpoint.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "checkpoint.safetensors"))
    params = [k for k in w1 if k.startswith("model.")]
    assert params and all(torch.allclose(w1[k], w2[k], atol=1e-5, rtol=1e-4) for k in params)
    # Only rank 0 writes: one record per evaluation, one report line.
    assert [r["step"] for r in metrics_without_time(tmp_path / "two")] == [10, 20, 30]
    assert two.stdout.count("test NLL") == 1


def test_error_in_a_distributed_run_is_one_line(tmp_path):
    result = flowforge("train", "--out", tmp_path / "r", "--nproc", 2, "--batch-size", 255, *SMALL)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "must divide" in lines[0], result.stderr


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    args = ["train", "--data", "moons", "--steps", 600, "--eval-every", 20, "--seed", 7, *SMALL]
    whole = flowforge(*args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "flowforge", *map(str, args), "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "results.json").exists()  # it really died mid-run

    resumed = flowforge("train", "--resume", run, "--no-plots", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_without_time(run) == metrics_without_time(tmp_path / "whole")
    r1 = json.loads((tmp_path / "whole" / "results.json").read_text())
    r2 = json.loads((run / "results.json").read_text())
    for key in ("test_nll", "best_val_nll", "best_step", "steps"):
        assert r1[key] == r2[key], key
    w1, w2 = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not list(run.glob(".*tmp*"))  # no temporary file left behind


def test_a_torchrun_launch_stopped_or_killed_is_said_in_one_line(monkeypatch, capsys):
    # Ctrl-C showed torch's SignalException as an internal error (exit 3); a rank 0 killed by a signal, nothing
    import signal

    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from flowforge.training.distributed import launch_torchrun

    def failing(*failures):
        def run(args):
            raise ChildFailedError("flowforge", {rank: ProcessFailure(rank, 100 + rank, code, "") for rank, code in failures})
        return run

    def interrupted(args):
        raise SignalException("got signal: 2", signal.SIGINT)

    for run, code, words in ((interrupted, 130, "flowforge: interrupted (the run keeps its last checkpoint"),
                             (failing((0, -9)), 1, "training process 0 was killed by signal 9"),
                             (failing((1, 2)), 2, "training process 1 failed (exit code 2)")):
        monkeypatch.setattr(torchrun, "run", run)
        assert launch_torchrun(2, ["train", "--data", "moons"]) == code
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and words in err and "train --resume" in err, err
    monkeypatch.setattr(torchrun, "run", failing((0, 1)))  # rank 0 said what went wrong itself
    assert launch_torchrun(2, ["train"]) == 1 and capsys.readouterr().err == ""
    # rank 1 failed first and torchrun's SIGTERM stopped rank 0: the cause is rank 1, unless rank 0 had
    # already said what went wrong (the same check failing on every rank; under load the order varies)
    monkeypatch.setattr(torchrun, "run", failing((0, -signal.SIGTERM), (1, 1)))
    assert launch_torchrun(2, ["train"]) == 1
    assert "training process 1 failed (exit code 1)" in capsys.readouterr().err
    failed = failing((0, -signal.SIGTERM), (1, 1))

    def reported_then_stopped(args):
        from flowforge.cli import _report
        _report("error: --batch-size 255 must divide among 2 processes")  # rank 0's own line
        failed(args)

    monkeypatch.setattr(torchrun, "run", reported_then_stopped)
    assert launch_torchrun(2, ["train"]) == 1
    assert capsys.readouterr().err.splitlines() == ["flowforge: error: --batch-size 255 must divide among 2 processes"]
    monkeypatch.setattr(torchrun, "run", failing((0, -signal.SIGTERM), (1, -signal.SIGKILL)))
    assert launch_torchrun(2, ["train"]) == 1 and "process 1 was killed by signal 9" in capsys.readouterr().err
    assert "FLOWFORGE_REPORTED_FILE" not in os.environ
