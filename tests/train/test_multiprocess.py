"""Multi-process `research train` (jax.distributed, gloo on CPU): 2 processes x 4 devices equal 1 x 8; the
checkpoint restores into one process with another mesh; a killed process stops the survivor, a restart resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from research.train import distributed
from tests.train.common import TINY

REPO = Path(__file__).resolve().parents[2]
STEPS = 12
CONFIG = (
  f"experiments/listops.py:{TINY},attention=linear,steps={STEPS},train.eval_every=4,train.keep_last=3,train.log_every=1"
)
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0", "PYTHONUNBUFFERED": "1"}
for key in distributed.ENV.values():
  ENV.pop(key, None)


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(workdir: Path, extra: str = "", *flags: str) -> list[str]:
  return [
    sys.executable,
    "-m",
    "research.cli",
    "train",
    "--no-progress",
    "--config",
    CONFIG + extra,
    "--workdir",
    str(workdir),
    *flags,
  ]


def _launch(workdir: Path, extra: str = "", processes: int = 2, heartbeat: int = 100) -> list[subprocess.Popen]:
  """The processes of one run; their output goes to files beside the workdir (pipes could fill and block)."""
  port = _port()
  procs = []
  for i in range(processes):
    logs = [open(workdir.parent / f"{workdir.name}.{i}.{kind}", "w") for kind in ("out", "err")]  # noqa: SIM115
    procs.append(
      subprocess.Popen(
        _cmd(
          workdir,
          extra,
          "--coordinator",
          f"127.0.0.1:{port}",
          "--num-processes",
          str(processes),
          "--process-id",
          str(i),
          "--local-devices",
          str(8 // processes),
          "--heartbeat-timeout",
          str(heartbeat),
        ),
        cwd=REPO,
        env=ENV,
        stdout=logs[0],
        stderr=logs[1],
      )
    )
    procs[-1].logs = logs
  return procs


def _wait(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
  """(return code, stdout, stderr) of each process."""
  out = []
  for p in procs:
    p.wait(timeout=timeout)
    for f in p.logs:
      f.close()
    out.append((p.returncode, *(Path(f.name).read_text() for f in p.logs)))
  return out


def _excerpt(err: str) -> str:
  """The start of a process's stderr (where its first error is) and its end (how it stopped)."""
  return err if len(err) < 6000 else f"{err[:3000]}\n[...]\n{err[-3000:]}"


def _single(workdir: Path, extra: str = "", *flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    _cmd(workdir, extra, "--local-devices", "8", *flags), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600
  )


def _state(workdir: Path, step: int, like: dict | None = None) -> dict:
  """The saved state; `like` (a state restored here) gives the target tree of a checkpoint whose devices are not
  this process's (a 2-process run's)."""
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = None if like is None else jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), like)
  with ocp.CheckpointManager(workdir / "checkpoints") as mngr:
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  return restored["state"]


def _losses(workdir: Path) -> list[float]:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["loss"] for r in rows if r["split"] == "train"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("multiprocess")
  procs = _launch(root / "two")  # both processes start before the single run: they overlap on the 2 cores
  single = _single(root / "one")
  outs = _wait(procs)
  assert single.returncode == 0, single.stderr[-3000:]
  for i, (rc, _, err) in enumerate(outs):
    assert rc == 0, f"process {i} exited with {rc}:\n{_excerpt(err)}"
  return root, outs


def test_two_processes_equal_one(runs):
  root, outs = runs
  ours = [line for line in outs[1][1].splitlines() if not line.startswith("[Gloo]")]  # gloo's C++ prints its own
  assert ours == [] and '"processes": 2' in outs[0][1]  # only process 0 prints (the summary)
  a, b = _losses(root / "one"), _losses(root / "two")
  assert len(a) == len(b) == STEPS
  np.testing.assert_allclose(b, a, rtol=2e-5)  # measured: identical to ~1e-7 relative
  one = _state(root / "one", STEPS)
  one, two = (dict(ocp.tree.to_flat_dict(x)) for x in (one, _state(root / "two", STEPS, like=one)))
  assert one.keys() == two.keys() and len(one) > 10
  for key in one:
    np.testing.assert_allclose(np.asarray(two[key]), np.asarray(one[key]), rtol=1e-4, atol=1e-6, err_msg=str(key))
  assert json.loads((root / "two" / "summary.json").read_text())["processes"] == 2


def test_checkpoint_restores_into_one_process_with_another_mesh(runs, tmp_path):
  root, _ = runs
  work = tmp_path / "continued"
  shutil.copytree(root / "two", work)
  out = _single(work, f",steps={STEPS + 4},mesh.shape=(2,4,1)")
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"resumed from {work / 'checkpoints'} at step {STEPS}" in out.stdout
  assert len(_losses(work)) == STEPS + 4


def test_a_killed_process_stops_the_survivor_and_a_restart_resumes(tmp_path):
  work = tmp_path / "killed"
  procs = _launch(work, ",steps=10000", heartbeat=5)  # far more steps than it will live for
  deadline = time.monotonic() + 600
  while not (work / "checkpoints" / "8").is_dir():  # orbax renames a finished checkpoint to its step
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no checkpoint at step 8"
    time.sleep(0.2)
  procs[1].kill()
  tic = time.perf_counter()
  (rc0, _, err0), (rc1, _, _) = _wait(procs, timeout=120)
  assert rc1 == -signal.SIGKILL and rc0 != 0 and time.perf_counter() - tic < 60
  # the survivor learns it from its next collective (a gloo error; fail_fast names the remedy) or from JAX's
  # coordination service ("... This most likely indicates that another task died ...")
  assert "another task died" in err0 or "restart every process: the run resumes from its last checkpoint" in err0, (
    _excerpt(err0)
  )
  latest = max(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
  restarted = _wait(_launch(work, f",steps={latest + 4}"))
  for i, (rc, _, err) in enumerate(restarted):
    assert rc == 0, f"process {i} exited with {rc}:\n{_excerpt(err)}"
  assert f"at step {latest}" in restarted[0][1] and len(_losses(work)) == latest + 4


def test_bad_cluster_flags_are_one_error_line(tmp_path, capsys):
  from research.cli import main

  rc = main(["train", "--config", CONFIG, "--workdir", str(tmp_path / "w"), "--num-processes", "2"])
  err = capsys.readouterr().err
  assert rc == 2 and "needs the coordinator address, the process count and this process's id together" in err
  rc = main(
    [
      "train",
      "--config",
      CONFIG,
      "--workdir",
      str(tmp_path / "w"),
      "--coordinator",
      "nohost",
      "--num-processes",
      "2",
      "--process-id",
      "0",
    ]
  )
  assert rc == 2 and "--coordinator 'nohost'; expected HOST:PORT" in capsys.readouterr().err
  with pytest.raises(ValueError, match="--process-id 2; expected 0 .. 1"):
    distributed.Cluster("h:1", 2, 2)


def test_an_error_in_one_process_ends_it_at_once(monkeypatch, capsys):
  """A multi-process run's failing process exits (`os._exit`) instead of waiting at the shutdown barrier."""
  exits = []
  monkeypatch.setattr(distributed.os, "_exit", exits.append)
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
  with distributed.fail_fast():
    raise ValueError("train.batch_size=7 must be divisible by 2")
  with distributed.fail_fast():
    raise KeyError("boom")
  assert exits == [2, 1]
  err = capsys.readouterr().err
  assert "error (process 0): train.batch_size=7 must be divisible by 2" in err and "Traceback" in err
  assert "error (process 0 of 2): KeyError (above); when another process died" in err
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 1)
  with pytest.raises(ValueError, match="single"), distributed.fail_fast():
    raise ValueError("single")


def test_processes_probing_one_workdir_do_not_collide(tmp_path):
  """Every process of a run probes the same workdir for writing (a shared probe file name made one fail)."""
  from concurrent.futures import ThreadPoolExecutor

  from research.config import writable_dir

  with ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda _: writable_dir(tmp_path / "w", "workdir", "choose another"), range(400)))
  assert list((tmp_path / "w").iterdir()) == []
