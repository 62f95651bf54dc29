"""Every experiments/<task>.py config trains a few steps end to end (data -> encoder -> head -> eval -> summary)."""

import math
from pathlib import Path

import pytest

from research.config import load_config
from research.train.loop import train

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
COMMON = ("steps=2,train.eval_every=2,batch_size=8,train.eval_batch_size=64,"
          "model.d_model=32,model.mlp_dim=64,model.num_layers=1")
SMALL = {  # keep each run to a few seconds: short rows, few examples
  "listops": "data.num_train=200,data.num_val=40,data.num_test=40",
  "text_cls": "data.max_bytes=96",
  "retrieval": "data.max_bytes=96",
  "mlm": "data.max_documents=12,data.seq_len=64",
  "wic": "data.max_len=32",
  "sentiment": "data.max_len=32,data.target='regression'",
  "pathfinder": "data.size=20,data.num_train=64,data.num_val=32,data.num_test=32",
  "mqar": "data.seq_len=64,data.num_kv=8,data.num_train=64,data.num_val=32,data.num_test=32",
  "xling": "data.max_len=32",
  "lra": "task=pathfinder,data.size=20,data.num_train=64,data.num_val=32,data.num_test=32",
}
TASK_OF = {"lra": "pathfinder"}


def test_every_task_has_an_experiment():
  assert sorted(p.stem for p in EXPERIMENTS.glob("*.py")) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_experiment_trains_a_few_steps(name, tmp_path):
  config = load_config(f"{EXPERIMENTS / name}.py:{COMMON},{SMALL[name]}")
  task = TASK_OF.get(name, name)
  assert config.task == task
  summary = train(config, tmp_path, progress=False)
  assert summary["task"] == task and summary["num_steps"] == 2
  assert all(math.isfinite(v) for v in summary["test_metrics"].values())
  assert 0.0 <= summary["test_accuracy"] <= 1.0
  assert (tmp_path / "summary.json").exists() and (tmp_path / "metrics.jsonl").exists()
