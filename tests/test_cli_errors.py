"""Bad input meets one clear error line (exit code 2), never a traceback from inside jit."""

from __future__ import annotations

import pytest

import research.attention as attention
from research.cli import main
from tests.train.common import TINY

BASE = "experiments/listops.py:" + TINY


@pytest.mark.parametrize(
  "overrides,message",
  [
    ("attention=sofmax", "unknown attention 'sofmax'; choose one of " + ", ".join(attention.names())),
    ("model.dmodel=32", "unknown config key 'model.dmodel'; valid keys: "),
    ("model.d_model=0", "model.d_model must be positive, got 0"),
    ("model.num_layers=-1", "model.num_layers must be positive, got -1"),
    ("train.batch_size=-4", "train.batch_size must be positive, got -4"),
    ("data.num_train=0", "num_train"),
    ("model.max_len=32", "data sequences have 49 tokens but model.max_len=32"),
    ("train.num_steps=many", "config key 'train.num_steps' expects int, got 'many'"),
    ("model.attention_cfg.chunk=4,attention=linear", "unknown attention option(s) 'chunk' for linear; valid: "),
    ("attention=linear+softmax+linear", "names 3 layers but model.num_layers=2"),
    ("model.positions=alibi", "model.positions='alibi'; expected one of learned, rope"),
    ("model.seq_softmax=flash", "model.seq_softmax='flash'; expected one of ring, allgather"),
    ("mesh.shape=(3,1,1)", "mesh.shape=(3, 1, 1, 1) uses 3 devices but 8 are present"),
    ("mesh.seq=3", "mesh.data=-1,mesh.fsdp=1,mesh.tensor=1,mesh.seq=3 cannot fill 8 devices"),
    ("mesh.seq=2,mesh.data=-1", "the task's sequence length 49 must be divisible by mesh.seq=2"),
    ("train.batch_size=12", "train.batch_size=12 must be divisible by the data*fsdp mesh size 8"),
  ],
)
def test_bad_config_is_one_clear_error(overrides, message, tmp_path, capsys):
  rc = main(["train", "--no-progress", "--config", f"{BASE},{overrides}", "--workdir", str(tmp_path / "w")])
  err = capsys.readouterr().err
  assert rc == 2
  assert message in err
  assert "Traceback" not in err and err.count("\n") == 1


def test_unwritable_workdir(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  rc = main(["train", "--config", BASE, "--workdir", str(blocker / "run")])
  assert rc == 2
  assert f"workdir '{blocker / 'run'}' is not writable" in capsys.readouterr().err


@pytest.mark.parametrize(
  "spec,message",
  [
    ("experiments/nope.py", "config 'experiments/nope.py' is not an existing .py file"),
    ("experiments/listops.py:attention", "config override 'attention' is not of the form key=value"),
    ("experiments/listops.py:size=huge", "unknown size 'huge'; choose one of tiny, lra"),
  ],
)
def test_bad_config_spec(spec, message, tmp_path, capsys):
  assert main(["train", "--config", spec, "--workdir", str(tmp_path)]) == 2
  assert message in capsys.readouterr().err


def test_compare_rejects_bad_variant_before_training(tmp_path, capsys):
  rc = main(["compare", "--config", BASE, "--variants", "softmax,performr", "--workdir", str(tmp_path)])
  assert rc == 2
  assert "unknown attention 'performr'" in capsys.readouterr().err
  assert not any(tmp_path.iterdir())  # nothing was trained


@pytest.mark.parametrize("seeds", ["0", "-1", "1,x", "1,-2", "4,,", ",", "", "2.5"])
def test_compare_rejects_bad_seeds_before_training(seeds, tmp_path, capsys):
  assert main(["compare", "--config", BASE, "--seeds", seeds, "--workdir", str(tmp_path)]) == 2
  assert (
    f"--seeds {seeds!r}: expected a positive count (3) or comma-separated non-negative seeds" in capsys.readouterr().err
  )
  assert not any(tmp_path.iterdir())


def test_seeds_are_a_count_or_a_list():
  from research.cli import parse_seeds

  assert parse_seeds("3") == 3 and parse_seeds("1,2") == (1, 2) and parse_seeds("2,") == (2,)


def test_nan_loss_stops_with_the_step(tmp_path, capsys):
  rc = main(
    [
      "train",
      "--no-progress",
      "--config",
      f"{BASE},steps=6,train.learning_rate=1e30,train.warmup_steps=1,train.clip_norm=1e30",
      "--workdir",
      str(tmp_path / "w"),
    ]
  )
  err = capsys.readouterr().err
  assert rc == 2
  assert "loss is nan at step" in err or "loss is inf at step" in err


@pytest.mark.parametrize(
  "argv,message",
  [
    (["attention", "--variants", "sofmax"], "unknown attention 'sofmax'"),
    (["attention", "--lengths", "256,x"], "--lengths '256,x'; expected comma-separated integers"),
    (["attention", "--lengths", "512,256"], "lengths must be increasing and distinct"),
    (["attention", "--dtype", "fp8"], "dtype 'fp8'; expected one of float32, bfloat16, float16"),
    (["attention", "--variants", "fnet", "--causal"], "fnet do(es) not support causal attention"),
    (["train", "--config", BASE + ",model.d_model=0"], "model.d_model must be positive, got 0"),
    (["train", "--config", BASE, "--steps", "0"], "steps must be >= 1"),
  ],
)
def test_bench_bad_input_is_one_clear_error(argv, message, capsys):
  rc = main(["bench", *argv])
  err = capsys.readouterr().err
  assert rc == 2 and message in err
  assert "Traceback" not in err and err.count("\n") == 1
