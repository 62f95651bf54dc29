"""Exact resume: SIGKILL after a finalized checkpoint, restart, end bitwise equal to an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from research.train.checkpoint import Checkpointer
from tests.train.common import TINY

REPO = Path(__file__).resolve().parents[2]
CONFIG = f"experiments/listops.py:{TINY},attention=linear,steps=24,train.eval_every=8,train.keep_last=2"


def _run(workdir: Path, extra: str = "") -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  cmd = [
    sys.executable,
    "-m",
    "research.cli",
    "train",
    "--no-progress",
    "--config",
    CONFIG + extra,
    "--workdir",
    str(workdir),
  ]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _final_state(workdir: Path) -> dict:
  with ocp.CheckpointManager(workdir / "checkpoints") as mngr:
    assert mngr.latest_step() == 24
    restored = mngr.restore(24, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored["state"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("resume")
  straight = _run(root / "straight")
  assert straight.returncode == 0, straight.stderr[-2000:]
  killed = _run(root / "killed", ",train.crash_after_checkpoint=16")
  assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
  resumed = _run(root / "killed")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from" in resumed.stdout and "at step 16" in resumed.stdout
  return root


def test_killed_and_resumed_run_is_bitwise_equal(runs):
  a, b = _final_state(runs / "straight"), _final_state(runs / "killed")
  flat_a, flat_b = (dict(ocp.tree.to_flat_dict(x)) for x in (a, b))
  assert flat_a.keys() == flat_b.keys() and len(flat_a) > 10
  for key in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key]), err_msg=str(key))
  assert int(np.asarray(a["step"])) == 24


def test_keeps_last_k_and_best(runs):
  steps = sorted(int(p.name) for p in (runs / "straight" / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-2:] == [16, 24] and len(steps) <= 3  # last 2, plus the best if it is older


def test_corrupted_latest_checkpoint_falls_back_with_warning(runs, tmp_path):
  work = tmp_path / "copy"
  shutil.copytree(runs / "straight", work)
  for f in (work / "checkpoints" / "24" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  import jax

  ckpt = Checkpointer(work / "checkpoints", keep_last=2, best_metric="val_accuracy")
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _final_state(runs / "straight"))
  with pytest.warns(RuntimeWarning, match="checkpoint at step 24 .* unreadable.*falling back"):
    state, step = ckpt.restore(abstract, None)
  assert step == 16 and int(state["step"]) == 16
  ckpt.close()
