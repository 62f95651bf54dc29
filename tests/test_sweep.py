"""research/sweep.py: enumeration, up-front validation, resume, LR selection, width matching, one real run.

Most tests inject a fake `train_fn` that writes summary.json/provenance.json the way train() does, so the
sweep logic is tested in milliseconds; one test trains a real tiny model through `execute`.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from research import sweep
from research.config import apply_overrides, load_config
from research.train.loop import TrainingDiverged

SPEC = (
  "experiments/listops.py:data.num_train=64,data.num_val=16,data.num_test=16,steps=2,train.eval_every=2,"
  "model.d_model=32,model.mlp_dim=64,model.num_layers=1,batch_size=8,train.eval_batch_size=16"
)


def val_of(lr: float) -> float:
  """Validation accuracy of the fake trainer: peaks at lr 1e-3."""
  return 0.9 - abs(np.log10(lr) + 3) / 10


class FakeTrain:
  """Writes what train() writes (provenance config + summary), counts calls, can be told to die at call n."""

  def __init__(self, interrupt_at: int | None = None, val=val_of):
    self.calls, self.interrupt_at, self.val = [], interrupt_at, val

  def __call__(self, config, workdir, progress=True):
    self.calls.append(Path(workdir).name)
    if len(self.calls) == self.interrupt_at:
      raise KeyboardInterrupt
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "provenance.json").write_text(json.dumps({"config": config.to_dict()}, default=str))
    summary = {
      "variant": config.model.attention,
      "seed": config.seed,
      "test_accuracy": 0.5,
      "wall_s": 0.0,
      "val_accuracy": self.val(config.train.learning_rate),
      "lr_used": config.train.learning_rate,
    }
    (workdir / "summary.json").write_text(json.dumps(summary))
    return summary


def test_plan_is_the_cross_product_with_grid_axes_from_repeated_keys():
  sets = ["data.max_depth=2", "data.max_depth=3", "steps=3"]  # axis of 2 x single value
  runs = sweep.plan(SPEC, "softmax,linear", 2, sets)
  assert len(runs) == 2 * 2 * 2 and len({r.name for r in runs}) == len(runs)
  assert {(r.variant, r.seed, dict(r.overrides)["data.max_depth"]) for r in runs} == {
    (v, s, d) for v in ("softmax", "linear") for s in (0, 1) for d in (2, 3)
  }
  assert all(dict(r.overrides)["train.num_steps"] == 3 for r in runs)  # the alias is resolved
  config = runs[0].config(SPEC)
  assert (config.model.attention, config.seed, config.train.num_steps) == (runs[0].variant, runs[0].seed, 3)
  assert config.data.max_depth == dict(runs[0].overrides)["data.max_depth"]
  # one --set may tie keys: they move together along one axis
  tied = sweep.plan(SPEC, "softmax", 1, ["data.max_depth=2,data.max_args=3", "data.max_depth=3,data.max_args=4"])
  assert [dict(r.overrides) for r in tied] == [
    {"data.max_depth": 2, "data.max_args": 3},
    {"data.max_depth": 3, "data.max_args": 4},
  ]
  assert sweep.plan(SPEC, ["softmax"], 1)[0].name == "softmax-seed0"


@pytest.mark.parametrize(
  "sets,variants,match",
  [
    (["data.nope=1"], "softmax", "data.nope"),  # unknown key
    (["data.max_depth='deep'"], "softmax", "deep"),  # wrong type
    (["steps=0"], "softmax", "num_steps must be positive, got 0"),  # caught by train.loop.validate
    (["data.max_depth=0"], "softmax", "max_depth"),  # caught by the task's Config
    (["attention=linear"], "softmax", "--variants"),
    (["data.max_depth=2", "data.max_depth=3,data.max_args=4"], "softmax", "max_depth"),  # key on two axes
    ([], "softmax,softmaxx", "softmaxx"),
  ],
)
def test_bad_input_fails_before_anything_trains(sets, variants, match):
  with pytest.raises(ValueError, match=match):
    sweep.plan(SPEC, variants, 2, sets)


def test_an_interrupted_sweep_trains_only_the_missing_runs(tmp_path):
  runs = sweep.plan(SPEC, "softmax,linear", 3)
  first = FakeTrain(interrupt_at=3)
  with pytest.raises(KeyboardInterrupt):
    sweep.execute(runs, SPEC, tmp_path, train_fn=first, log=lambda s: None)
  listing = json.loads((tmp_path / "sweep.json").read_text())["runs"]
  assert [r["status"] for r in listing] == ["done", "done", "interrupted", "pending", "pending", "pending"]

  lines = []
  second = FakeTrain()
  records = sweep.execute(runs, SPEC, tmp_path, train_fn=second, log=lines.append)
  assert second.calls == [r.name for r in runs[2:]]
  assert [r["status"] for r in records] == ["reused", "reused", "done", "done", "done", "done"]
  assert "ETA for the remaining 4 runs: unknown" in lines[2]  # before the first trained run finishes
  assert "done in" in lines[3] and re.search(r"ETA for the remaining 3 runs: \d", lines[3])
  assert all(r["summary"]["seed"] == r["seed"] for r in records)
  assert load_config(records[3]["spec"]).to_dict() == runs[3].config(SPEC).to_dict()  # reruns one cell

  third = FakeTrain()
  sweep.execute(runs, SPEC, tmp_path, train_fn=third, log=lambda s: None)
  assert third.calls == []
  with pytest.raises(ValueError, match="different config"):  # same names, other config: never resumed into
    sweep.execute(sweep.plan(SPEC + ",steps=3", "softmax", 1), SPEC + ",steps=3", tmp_path, train_fn=third)


def test_lr_is_selected_on_validation_and_seed_zero_is_reused(tmp_path):
  grid = (1e-4, 3e-4, 1e-3, 3e-3)
  runs = sweep.plan(SPEC, "softmax,linear", 3, lr_grid=grid)
  assert len(runs) == 2 * 4 + 2 * 2  # stage 1: seed 0 x grid; stage 2: seeds 1, 2
  fake = FakeTrain()
  records = sweep.execute(runs, SPEC, tmp_path, train_fn=fake, log=lambda s: None)
  assert len(fake.calls) == len(runs) and len(set(fake.calls)) == len(runs)
  final = sweep.summaries(records)
  assert sorted((s["variant"], s["seed"], s["lr"]) for s in final) == sorted(
    (v, s, 1e-3) for v in ("softmax", "linear") for s in range(3)
  )
  assert all(s["lr_used"] == 1e-3 for s in final)
  seed0 = [r for r in records if r["final"] and r["seed"] == 0]
  assert {r["name"] for r in seed0} == {"softmax-lr0.001-seed0", "linear-lr0.001-seed0"}  # the stage-1 runs
  for r in records:
    assert r["lr_selection"]["chosen"] == 1e-3 and r["lr_selection"]["val_accuracy"]["0.001"] == val_of(1e-3)
  saved = json.loads((tmp_path / "sweep.json").read_text())["runs"]
  assert sum(r["final"] for r in saved) == 6 and all(r["lr_selection"]["grid"] == list(grid) for r in saved)

  with pytest.raises(ValueError, match="no LR-search run"):  # stage 2 cannot run before stage 1
    sweep.execute(runs[::-1], SPEC, tmp_path, train_fn=fake)
  tied = FakeTrain(val=lambda lr: 0.5)  # ties -> the smaller rate
  records = sweep.execute(
    sweep.plan(SPEC, "softmax", 2, lr_grid=grid), SPEC, tmp_path / "tie", train_fn=tied, log=lambda s: None
  )
  assert {r["lr"] for r in records if r["final"]} == {1e-4} and len(tied.calls) == 5


def test_a_diverged_rate_is_recorded_and_left_out_of_the_selection(tmp_path):
  class Diverging(FakeTrain):
    def __call__(self, config, workdir, progress=True):
      if config.train.learning_rate > 2e-3:
        self.calls.append(Path(workdir).name)
        raise TrainingDiverged("loss is nan at step 1")
      return super().__call__(config, workdir, progress)

  fake = Diverging(val=lambda lr: lr)  # the largest rate would win, but it diverges
  records = sweep.execute(
    sweep.plan(SPEC, "softmax", 2, lr_grid=(1e-3, 3e-3)), SPEC, tmp_path, train_fn=fake, log=lambda s: None
  )
  assert [(r["lr"], r["status"], r["final"]) for r in records] == [
    (1e-3, "done", True),
    (3e-3, "diverged", False),
    (1e-3, "done", True),
  ]
  assert records[0]["lr_selection"]["val_accuracy"] == {"0.001": 1e-3, "0.003": None}


def test_same_seed_same_data_order_across_variants():
  from research.data.pipeline import build_task, train_dataset

  def first_batch(run):
    config = run.config(SPEC)
    return train_dataset(build_task(config.task, config.data.to_dict()), 8, seed=config.seed)[0]

  softmax0, linear0, softmax1 = (sweep.Run(v, s) for v, s in (("softmax", 0), ("linear", 0), ("softmax", 1)))
  a, b, c = first_batch(softmax0), first_batch(linear0), first_batch(softmax1)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not np.array_equal(a["tokens"], c["tokens"])


def test_match_params_picks_the_closest_width(tmp_path):
  lines = []
  runs = sweep.plan(SPEC, "softmax,synthesizer,based", 1, match_params="softmax", log=lines.append)
  by_variant = {r.variant: r for r in runs}
  assert by_variant["softmax"].width == ()  # the reference keeps its configured width
  reference = sweep.count_params(by_variant["softmax"].config(SPEC))
  unmatched = sweep.count_params(sweep.Run("synthesizer", 0).config(SPEC))
  assert unmatched > 1.15 * reference  # synthesizer's dense H x D x max_len weights: off by > 15% at equal width
  for variant in ("synthesizer", "based"):
    run = by_variant[variant]
    config = run.config(SPEC)
    params = sweep.count_params(config)
    gap = abs(params / reference - 1)
    assert gap < abs(unmatched / reference - 1) if variant == "synthesizer" else gap < 0.1
    step = 2 * config.model.num_heads
    for d in (config.model.d_model - step, config.model.d_model + step):  # no neighbouring width is closer
      neighbour = apply_overrides(sweep.Run(variant, 0).config(SPEC), {"model.d_model": d, "model.mlp_dim": 2 * d})
      assert abs(sweep.count_params(neighbour) / reference - 1) >= gap
    assert dict(run.matched) == {
      "reference": "softmax",
      "reference_params": reference,
      "params": params,
      "rel_diff": pytest.approx(params / reference - 1, abs=1e-6),
      "d_model": config.model.d_model,
      "mlp_dim": config.model.mlp_dim,
    }
    assert config.model.d_model % step == 0
    assert config.model.mlp_dim == 2 * config.model.d_model  # the configured mlp_dim/d_model ratio
  assert by_variant["synthesizer"].config(SPEC).model.d_model < 32
  assert any("synthesizer d_model" in line for line in lines)


def test_one_real_run_through_execute(tmp_path):
  runs = sweep.plan(SPEC, "linear", 1)
  (record,) = sweep.execute(runs, SPEC, tmp_path, progress=False, log=lambda s: None)
  summary = record["summary"]
  assert record["status"] == "done" and summary["variant"] == "linear" and summary["num_steps"] == 2
  assert summary["params"] == sweep.count_params(runs[0].config(SPEC))  # eval_shape count == trained count
  assert json.loads((tmp_path / record["summary_path"]).read_text()) == summary

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run must not be retrained")

  (again,) = sweep.execute(runs, SPEC, tmp_path, train_fn=no_training, log=lambda s: None)
  assert again["status"] == "reused" and again["summary"] == summary


def test_a_run_made_before_a_config_key_existed_counts_as_the_same_run(tmp_path):
  new = json.loads(load_config(SPEC).to_json())
  old = {**new, "train": {k: v for k, v in new["train"].items() if k != "init_from"}}  # predates train.init_from
  (tmp_path / "provenance.json").write_text(json.dumps({"config": old}))
  assert sweep._state(tmp_path, new) == "interrupted"  # same run: resumed, not an error
  changed = {**new, "train": {**new["train"], "init_from": "runs/pretrained"}}  # the new key is NOT its default
  with pytest.raises(ValueError, match=r"different config \(train.init_from"):
    sweep._state(tmp_path, changed)
