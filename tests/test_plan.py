"""research.plan: exact state bytes under data vs fsdp meshes, activation growth, the fits verdict, bad input."""

import argparse
import importlib.util
import json

import pytest

from research import plan

SPEC = "experiments/listops.py"
TINY = "model.d_model=32,model.num_heads=2,model.num_layers=1,model.mlp_dim=64,train.batch_size=8"
E, M, C, V = 32, 64, 10, 128  # width, MLP, ListOps classes, its 17-token vocabulary padded to 128


def hand_param_counts(length: int) -> tuple[int, int]:
  """(parameters with an `embed` axis, the others) of the one-layer ListOps classifier, counted by hand."""
  embed_axis = (
    V * E
    + length * E  # token and learned position embeddings
    + 4 * E  # attn_norm, mlp_norm: scale + bias
    + 3 * E * E
    + E * E
    + E  # q/k/v kernels E x H x D, out kernel H x D x E and its bias
    + E * M
    + M * E
    + E  # mlp_in kernel, mlp_out kernel and bias
    + 2 * E
    + E * E
  )  # final_norm, pre_logits kernel (embed, mlp)
  other = 3 * E + M + E + E * C + C  # q/k/v biases (heads, kv), mlp_in bias, pre_logits bias, logits (mlp, None)
  return embed_axis, other


@pytest.fixture(scope="module")
def config():
  return plan.load(SPEC, [TINY])


def test_state_bytes_match_a_hand_count_and_only_fsdp_divides_them(config):
  embed_axis, other = hand_param_counts(256)
  data = plan.state_bytes(config, plan.parse_mesh("data=8", 8), 256)
  fsdp = plan.state_bytes(config, plan.parse_mesh("fsdp=-1", 8), 256)
  assert data["params"] == 4 * (embed_axis + other)  # fp32, replicated over data
  assert fsdp["params"] == 4 * (embed_axis // 8 + other)  # every `embed` axis split 8 ways
  counters = 2 * 4  # int32 step counts of scale_by_adam and of the learning-rate schedule
  assert data["optimizer"] == 2 * data["params"] + counters  # AdamW mu and nu, shaped and sharded like the params
  assert fsdp["optimizer"] == 2 * fsdp["params"] + counters
  batch = 1 * 256 * 4 * 3 + 4 + 4  # per device: tokens, segment_ids, positions (int32), one target and one weight
  assert data["batch"] == fsdp["batch"] == batch
  assert data["other_state"] == fsdp["other_state"] == 4 + 8  # step (int32) and the uint32[2] rng key


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="research")
  plan.add_parser(p.add_subparsers(dest="command"))
  return p


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  """Four compiled rows, through the command line (what research/cli.py will call)."""
  out = tmp_path_factory.mktemp("plan")
  args = parser().parse_args(
    [
      "plan",
      "--config",
      SPEC,
      "--set",
      TINY,
      "--mesh",
      "data=-1",
      "--seq-len",
      "256,1024",
      "--variants",
      "softmax,linear",
      "--per-device-batch",
      "1",
      "--out",
      str(out),
      "--name",
      "tiny",
    ]
  )
  result = args.func(args)
  assert json.loads((out / "tiny.json").read_text())["rows"] == result["rows"]
  assert (out / "tiny.md").read_text().startswith("## Memory plan: `experiments/listops.py` with model.d_model=32")
  assert result["command"].startswith("research plan --config experiments/listops.py --set model.d_model=32")
  return result


@pytest.fixture(scope="module")
def rows(result):
  return {(r["attention"], r["seq_len"]): r for r in result["rows"]}


def test_compiled_arguments_equal_the_exact_state_and_batch(rows):
  for r in rows.values():
    assert r["compiled_bytes"]["argument"] == sum(r["exact_bytes"].values())
    assert r["total_bytes"] >= r["temp_bytes"] > 0


def test_softmax_activations_grow_faster_with_length_than_linear(rows):
  """4x the tokens: softmax's LxL scores make its temporaries grow by more than linear attention's."""
  growth = {v: rows[(v, 1024)]["temp_bytes"] / rows[(v, 256)]["temp_bytes"] for v in ("softmax", "linear")}
  assert growth["linear"] < 4.5, growth
  assert growth["softmax"] > 1.5 * growth["linear"], growth


def test_fits_flips_when_the_budget_drops_below_the_total(result, rows):
  r = rows[("softmax", 1024)]
  assert r["fits"]  # a few MiB against host RAM / 8
  assert plan.with_budget(r, r["total_bytes"])["fits"]
  assert not plan.with_budget(r, r["total_bytes"] - 1)["fits"]
  assert "| yes |" in plan.markdown(result)
  assert "| **no** |" in plan.markdown({**result, "rows": [plan.with_budget(r, r["total_bytes"] - 1)]})


@pytest.mark.parametrize(
  "text, message",
  [
    ("data=3", r"--mesh 'data=3' uses 3 devices but 8 are expected"),
    ("data=2,pipe=4", r"unknown axis 'pipe'; expected axis=size items over data, fsdp, tensor, seq"),
    ("data:8", r"'data:8' is not axis=size"),
    ("data=-1,fsdp=-1", r"more than one -1"),
    ("fsdp=3,data=-1", r"the other axes use 3 devices, which does not divide the 8 devices"),
    ("data=two", r"size 'two' of 'data' is not an integer"),
  ],
)
def test_bad_mesh_is_one_clear_value_error(text, message):
  with pytest.raises(ValueError, match=message) as e:
    plan.parse_mesh(text, 8)
  assert "\n" not in str(e.value)


def test_unknown_target_and_mismatched_meshes_are_clear_errors():
  with pytest.raises(ValueError, match=r"unknown target 'v9-8'; choose one of cpu, h100, h100x8"):
    plan.get_target("v9-8")
  with pytest.raises(ValueError, match=r"--mesh 'data=3' uses 3 devices but 8 are expected for target 'h100x8'"):
    plan.run(SPEC, ["h100x8"], ["data=3"], [64], sets=[TINY])
  with pytest.raises(ValueError, match=r"2 --mesh for 3 --target"):
    plan.run(SPEC, ["cpu", "cpu", "cpu"], ["data=8", "fsdp=8"], [64], sets=[TINY])


def test_command_line_reports_bad_input():
  args = parser().parse_args(
    ["plan", "--config", SPEC, "--set", TINY, "--target", "h100x8", "--mesh", "tensor=16", "--seq-len", "64"]
  )
  assert args.func is plan.main
  with pytest.raises(ValueError, match=r"uses 16 devices but 8 are expected for target 'h100x8'"):
    args.func(args)
  with pytest.raises(ValueError, match=r"--seq-len '4k'; expected comma-separated integers"):
    args.func(parser().parse_args(["plan", "--config", SPEC, "--seq-len", "4k"]))


def test_tpu_targets_fall_back_to_a_labelled_cpu_estimate_without_libtpu():
  devices, method, why = plan._devices(plan.get_target("v5e-16"))
  if importlib.util.find_spec("libtpu") is None:
    assert devices is None and method == "estimate (CPU compile of one shard)"  # 16 chips > the 8 CPU devices here
    assert why.startswith("v5e-16: TPU AOT unavailable (RuntimeError: JAX TPU support not installed")
  else:
    assert len(devices) == 16 and method == "TPU AOT compile" and not why
