"""Every experiments/<task>.py config trains a few steps end to end (data -> encoder -> head -> eval -> summary)."""

import functools
import importlib.util
import math
from pathlib import Path

import pytest

from research.config import load_config
from research.train.loop import train

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
COMMON = (
  "steps=2,train.eval_every=2,batch_size=8,train.eval_batch_size=64,"
  "model.d_model=32,model.mlp_dim=64,model.num_layers=1"
)
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


ANALYSES = ("performer_approx",)  # experiments that measure rather than train
STAGED = ("self_pretrain",)  # pretrain then fine-tune: test_self_pretraining_stages
OWN_DRIVER = ("linearize",)  # research linearize, not research train: tests/test_linearize.py


def test_every_task_has_an_experiment():
  assert sorted(p.stem for p in EXPERIMENTS.glob("*.py")) == sorted([*SMALL, *ANALYSES, *STAGED, *OWN_DRIVER])


def test_performer_approximation_improves_with_features(tmp_path):
  spec = importlib.util.spec_from_file_location("performer_approx", EXPERIMENTS / "performer_approx.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(
    "draws=3,features=(8,256),lengths=(64,),length=64,features_at_lengths=16,qk_std=0.5,"
    "head_dim=16,num_heads=2,settings=(('FAVOR+ orthogonal','softmax',True),('ReLU','relu',True))"
  )
  results = module.run(c, tmp_path)
  (few, _), (many, _) = [row[1:] for row in results["vs_features"]["FAVOR+ orthogonal"]]
  assert many < 0.6 * few  # the FAVOR+ estimator converges to exact softmax as m grows
  relu = [row[1] for row in results["vs_features"]["ReLU"]]
  assert min(relu) > 0.0  # a different kernel: never exact
  assert {p.name for p in tmp_path.iterdir()} == {f"performer_approx.{ext}" for ext in ("json", "md", "png")}
  assert (
    results["wall_s"] > 0 and f"wall time {results['wall_s']:.0f} s" in (tmp_path / "performer_approx.md").read_text()
  )


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


def test_self_pretraining_stages(tmp_path):
  """MLM on ListOps' own train inputs, then fine-tune from that encoder; scratch differs only in init_from."""
  small = f"{COMMON},{SMALL['listops']}"
  pre = load_config(f"{EXPERIMENTS}/self_pretrain.py:task=listops,stage=pretrain,{small}")
  assert pre.task == "mlm" and pre.data.self_task == "listops" and pre.data.seq_len == pre.model.max_len
  summary = train(pre, tmp_path / "pre" / "linear-seed0", progress=False)
  assert summary["task"] == "mlm" and summary["id_offset"] == 4  # ListOps ids shifted past the special ids
  spec = (
    f"{EXPERIMENTS}/self_pretrain.py:task=listops,{small},attention='linear',"
    f"pretrained='{tmp_path}/pre/{{variant}}-seed{{seed}}'"
  )
  finetune, scratch = (load_config(f"{spec},stage={stage}") for stage in ("finetune", "scratch"))
  assert finetune.train.init_from and not scratch.train.init_from
  finetune.train.init_from = ""
  assert finetune.to_dict() == scratch.to_dict()
  assert scratch.to_dict() == load_config(f"{EXPERIMENTS}/listops.py:{small},attention='linear'").to_dict()
  out = train(load_config(f"{spec},stage=finetune"), tmp_path / "ft", progress=False)
  assert out["task"] == "listops" and out["init_from"] == f"{tmp_path}/pre/linear-seed0"
  with pytest.raises(ValueError, match="holds no checkpoints"):
    train(load_config(f"{spec.replace('linear', 'softmax')},stage=finetune"), tmp_path / "ft2", progress=False)


PAPER = {  # the experiment configs at size=paper: (config spec, {dotted key: the paper's value})
  "lra listops": (
    "lra.py:task=listops,size=paper",
    {
      "model.num_layers": 6,
      "model.d_model": 512,
      "model.num_heads": 8,
      "model.mlp_dim": 2048,
      "model.pool": "cls",
      "train.batch_size": 32,
      "train.num_steps": 5_000,
      "train.warmup_steps": 1_000,
      "train.weight_decay": 0.1,
      "train.schedule": "rsqrt",
      "data.max_length": 2_000,
    },
  ),
  "lra text": (
    "lra.py:task=text_cls,size=paper",
    {"model.num_layers": 4, "model.d_model": 256, "data.max_bytes": 4096},
  ),
  "lra retrieval": ("lra.py:task=retrieval,size=paper", {"model.d_model": 128, "train.num_steps": 5_000}),
  "lra pathfinder": ("lra.py:task=pathfinder,size=paper", {"model.d_model": 32, "train.batch_size": 512}),
  "mqar": (
    "mqar.py:size=paper",
    {
      "data.vocab_size": 8_192,
      "data.seq_len": 512,
      "data.num_kv": 64,
      "data.num_train": 100_000,
      "model.num_layers": 2,
      "train.batch_size": 256,
      "train.num_steps": 25_000,
    },
  ),
  "wic": (
    "wic.py:size=paper",
    {"model.num_layers": 12, "model.d_model": 768, "model.mlp_dim": 3072, "data.max_len": 128},
  ),
  "self_pretrain listops": (
    "self_pretrain.py:task=listops,stage=pretrain,size=paper",
    {"task": "mlm", "data.self_task": "listops", "data.seq_len": 2_001, "model.d_model": 512, "train.num_steps": 5_000},
  ),
  # (stage=finetune's validation needs the pretraining run on disk: its config is the scratch one + init_from)
  "self_pretrain text": ("self_pretrain.py:task=text_cls,stage=scratch,size=paper", {"model.d_model": 256}),
  "self_pretrain wic": (
    "self_pretrain.py:task=wic,stage=pretrain,size=paper",
    {"task": "mlm", "data.self_task": "wic", "data.seq_len": 128, "model.d_model": 768},
  ),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_size_configs_load_validate_and_hold_the_papers_settings(name):
  """size=paper is for an accelerator: here it must load, pass every pre-jit check and carry the paper's values."""
  from research.data import tasks
  from research.train.loop import validate

  spec, expected = PAPER[name]
  config = load_config(f"{EXPERIMENTS}/{spec}")
  validate(config)
  tasks.make_config(config.task, config.data.to_dict())  # the task's own option checks (no data generated)
  assert {key: functools.reduce(lambda node, part: node[part], key.split("."), config) for key in expected} == expected


def test_performer_approx_paper_size_and_bad_size():
  spec = importlib.util.spec_from_file_location("performer_approx", EXPERIMENTS / "performer_approx.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  paper = module.get_config("size=paper")
  assert max(paper.features) == 512 and max(paper.lengths) == 16_384 and paper.draws == 32
  assert module.get_config("size=paper,draws=4").draws == 4  # later overrides win
  assert module.get_config().to_dict() == module.get_config("size=tiny").to_dict()
  with pytest.raises(ValueError, match="unknown size 'huge'; choose one of tiny, paper"):
    module.get_config("size=huge")
  for name in ("mqar", "wic"):
    with pytest.raises(ValueError, match="unknown size 'huge'; choose one of tiny, paper"):
      load_config(f"{EXPERIMENTS}/{name}.py:size=huge")
