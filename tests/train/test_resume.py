"""Exact resume: SIGKILL after a finalized checkpoint, restart, end bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
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


def test_resumed_wall_time_counts_both_sittings(runs):
  """summary wall_s = the killed sitting's wall up to its step-16 checkpoint + the resumed sitting's own wall."""
  rows = [json.loads(line) for line in (runs / "killed" / "metrics.jsonl").read_text().splitlines()]
  val = {r["step"]: r["wall_s"] for r in rows if r["split"] == "val"}
  summary = json.loads((runs / "killed" / "summary.json").read_text())
  assert sorted(val) == [8, 16, 24] and val[8] < val[16] < val[24] <= summary["wall_s"]
  assert summary["resumed_from"] == 16 and summary["wall_s_complete"] is True
  straight = json.loads((runs / "straight" / "summary.json").read_text())
  assert straight["resumed_from"] is None and straight["wall_s_complete"] is True


def test_read_history_returns_the_earlier_sittings_wall_time(tmp_path):
  from research.train.loop import _read_history

  rows = [
    {"step": 8, "split": "train", "loss": 1.0},
    {"step": 8, "split": "val", "accuracy": 0.25, "wall_s": 3.5},
    {"step": 16, "split": "val", "accuracy": 0.5, "wall_s": 7.0},
    {"step": 24, "split": "val", "accuracy": 0.75},  # written before wall_s was recorded
  ]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert _read_history(tmp_path, 0) == ([], 0.0)
  assert _read_history(tmp_path, 16) == ([[8, 0.25], [16, 0.5]], 7.0)
  assert _read_history(tmp_path, 24)[1] is None  # unknown: the summary says wall_s_complete=False
  assert _read_history(tmp_path / "fresh", 0) == ([], 0.0)
