"""Reliability of run directories (issue 15, classes 1, 2, 6): one run per directory,
claimed before any slow work; a run killed before its first checkpoint starts again;
a resume refuses missing or foreign artefacts instead of reporting wrong results."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from adaref import train

FAST = ["--sample", "criteo", "--quiet", "--train.max_steps", "6", "--train.eval_every", "3",
        "--model.dim", "4"]


def _lock_of(pid, started=None):
    return {"pid": pid, "host": socket.gethostname(), "started": started or time.time(), "argv": "test"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "done"
    assert train.main(FAST + ["--out", str(out)]) == 0
    return out


# -- class 2: one run per directory ---------------------------------------------------
def test_a_second_run_on_a_claimed_directory_exits_2_naming_the_holder(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "run"
        out.mkdir()
        (out / ".adaref.lock").write_text(json.dumps(_lock_of(holder.pid)))
        start = time.perf_counter()
        assert train.main(FAST + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid} on host {socket.gethostname()}" in err
        assert time.perf_counter() - start < 5                 # refused before the data is loaded
        assert sorted(os.listdir(out)) == [".adaref.lock"]    # nothing of this run written
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_exclusive_released_and_a_dead_owners_lock_is_taken_over(tmp_path):
    from adaref.locks import DirectoryLock, LockHeld

    a = DirectoryLock(tmp_path).acquire()
    with pytest.raises(LockHeld, match=rf"in use by process {os.getpid()}"):
        DirectoryLock(tmp_path).acquire()
    a.release()
    assert not (tmp_path / ".adaref.lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".adaref.lock").write_text(json.dumps(_lock_of(dead.pid)))
    b = DirectoryLock(tmp_path).acquire()
    assert b.took_over and f"process {dead.pid}" in b.took_over
    b.release()


def test_a_stale_lock_is_taken_over_with_a_message_and_released_at_exit(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / ".adaref.lock").write_text(json.dumps(_lock_of(dead.pid)))
    assert train.main([a for a in FAST if a != "--quiet"] + ["--out", str(out)]) == 0
    assert f"took over the lock of process {dead.pid}" in capsys.readouterr().err
    assert not (out / ".adaref.lock").exists()
    assert (out / "metrics.json").is_file()


# -- class 6: killed before the first checkpoint; orphaned temporary files ----------------
def _unstarted_copy(finished, dest, with_data=True):
    dest.mkdir()
    shutil.copy(finished / "config.json", dest / "config.json")
    if not with_data:
        return dest
    shutil.copytree(finished / "data", dest / "data")
    (dest / ".last.npz.x1y2z3.tmp").write_bytes(b"PK half written")
    (dest / ".history.csv.tmp").write_text("step,epoch\n")
    (dest / "data" / ".vocab.json.tmp").write_text("{")
    return dest


def test_a_run_killed_before_its_first_checkpoint_starts_again_into_the_same_out(finished, tmp_path, capsys):
    out = _unstarted_copy(finished, tmp_path / "killed")
    status = train.main(["--sample", "criteo", "--train.max_steps", "6", "--train.eval_every", "3",
                         "--model.dim", "4", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "stopped before its first checkpoint" in err and "removed 3 temporary file(s)" in err
    assert not list(out.glob(".*.tmp")) and not list((out / "data").glob(".*.tmp"))
    assert json.loads((out / "metrics.json").read_text()) == json.loads((finished / "metrics.json").read_text())


def test_resume_of_a_run_killed_before_its_first_checkpoint_trains_from_step_0(finished, tmp_path, capsys):
    out = _unstarted_copy(finished, tmp_path / "killed")
    assert train.main(["--resume", str(out)]) == 0, capsys.readouterr().err
    assert "training it from step 0" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text()) == json.loads((finished / "metrics.json").read_text())


def test_a_finished_run_is_still_refused_as_out(finished, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(FAST + ["--out", str(finished)])
    assert e.value.code == 2 and "already holds a run" in capsys.readouterr().err
    assert not (finished / ".adaref.lock").exists()


# -- class 1: a resume checks the artefacts its results depend on -----------------------
def test_resume_refuses_a_missing_best_npz_instead_of_scoring_the_last_weights(finished, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    (out / "best.npz").unlink()
    (out / "metrics.json").unlink()
    assert train.main(["--resume", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "checkpoint error" in err and "best.npz: missing" in err and "step" in err
    assert not (out / "metrics.json").exists()


def test_resume_refuses_a_foreign_best_npz_or_metrics_json(finished, tmp_path, capsys):
    other = tmp_path / "other"
    assert train.main(FAST + ["--out", str(other), "--train.optimizer.options", '{"lr": 0.003}']) == 0
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    shutil.copy(other / "best.npz", out / "best.npz")
    assert train.main(["--resume", str(out), "--quiet"]) == 1
    assert "comes from another run" in capsys.readouterr().err
    shorter = tmp_path / "shorter"                      # another batch size: another epoch length
    assert train.main(FAST + ["--out", str(shorter), "--train.batch_size", "128"]) == 0
    shutil.copy(shorter / "best.npz", out / "best.npz")
    assert train.main(["--resume", str(out), "--quiet"]) == 1
    assert "first difference at model.steps_per_epoch" in capsys.readouterr().err
    shutil.copy(finished / "best.npz", out / "best.npz")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["best_step"] = 3 if metrics["best_step"] != 3 else 6
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert train.main(["--resume", str(out), "--quiet"]) == 1
    assert "metrics.json: reports best step" in capsys.readouterr().err


def test_config_json_alone_is_a_run_that_did_not_start(finished, tmp_path, capsys):
    out = _unstarted_copy(finished, tmp_path / "killed", with_data=False)
    assert train.main(FAST + ["--out", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text()) == json.loads((finished / "metrics.json").read_text())


def test_two_concurrent_trainings_on_one_out_one_is_refused(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([sys.executable, "-m", "adaref.train"] + FAST + ["--out", str(out)],
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(300):                                   # until the first run holds the directory
            if (out / ".adaref.lock").exists():
                break
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "adaref.train"] + FAST + ["--out", str(out)],
                                capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"in use by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    assert (out / "metrics.json").is_file() and not (out / ".adaref.lock").exists()
