"""Report figures: each writes a real PNG, and returns None (writing nothing) when its data is absent."""

from __future__ import annotations

from research.report import figures, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(
  variant: str,
  seed: int,
  *,
  task: str = "listops",
  seq_len: int = 128,
  label: str = "",
  curve: list | None = None,
  base: float = 0.1,
) -> dict:
  s = {
    "variant": variant,
    "seed": seed,
    "task": task,
    "params": 1000,
    "test_accuracy": 0.3 + 0.01 * seed,
    "final_test_accuracy": 0.28,
    "val_accuracy": 0.3,
    "tokens_per_s": 1e5 / seq_len * (2 if variant == "linear" else 1),
    "compiled_memory_bytes": seq_len**2 * 1000,
    "wall_s": 1.0,
    "majority_baseline": base,
    "seq_len": seq_len,
    "curve": [[10, 0.1], [20, 0.2 + 0.01 * seed]] if curve is None else curve,
  }
  if label:
    s["label"] = label
  return s


def _is_png(path) -> bool:
  data = path.read_bytes()
  return data[:8] == PNG_MAGIC and len(data) > 2000


def test_accuracy_bars(tmp_path):
  runs = [
    _run(v, s, task=t, base=b)
    for t, b in (("listops", 0.1), ("pathfinder", 0.5))
    for v in ("softmax", "linear", "performer")
    for s in range(3)
  ]
  runs.append(_run("local", 0, task="pathfinder", base=0.5))  # one seed: no error bar
  path = figures.accuracy(runs, tmp_path / "sub" / "acc.png")
  assert path == tmp_path / "sub" / "acc.png" and _is_png(path)
  assert figures.accuracy([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_curves(tmp_path):
  runs = [
    _run(v, s, task=t)
    for t in ("listops", "pathfinder", "text", "retrieval")
    for v in ("softmax", "linear")
    for s in range(2)
  ]
  runs.append(_run("softmax", 2, curve=[[10, 0.1]]))  # a seed with fewer eval points: mean on common steps
  assert _is_png(figures.curves(runs, tmp_path / "curves.png"))
  no_curves = [_run("softmax", 0, curve=[]), _run("linear", 0, curve=[])]
  assert figures.curves(no_curves, tmp_path / "c2.png") is None and not (tmp_path / "c2.png").exists()


def test_scaling(tmp_path):
  one_length = [_run(v, s) for v in ("softmax", "linear") for s in range(2)]
  assert figures.scaling(one_length, tmp_path / "s0.png") is None and not (tmp_path / "s0.png").exists()
  one_per_task = [_run("softmax", 0, task="listops", seq_len=64), _run("softmax", 0, task="text", seq_len=1024)]
  assert figures.scaling(one_per_task, tmp_path / "s0.png") is None and not (tmp_path / "s0.png").exists()
  lengths = [
    _run(v, s, seq_len=n, label=f"data.max_length={n}")
    for v in ("softmax", "linear")
    for n in (128, 256, 512)
    for s in range(2)
  ]
  assert _is_png(figures.scaling(lengths, tmp_path / "s1.png"))
  # The length label is implied by seq_len, so lines are per variant; a width sweep at every length is not.
  assert {t: list(lines) for t, lines in figures._scaling_series(lengths).items()} == {"listops": ["softmax", "linear"]}
  widths = [_run("linear", 0, seq_len=n, label=f"model.d_model={d}") for n in (64, 128) for d in (32, 64)]
  widths.append(_run("softmax", 0, seq_len=64, label="model.d_model=32"))  # one length only: left out
  assert list(figures._scaling_series(widths)["listops"]) == ["linear [model.d_model=32]", "linear [model.d_model=64]"]
  assert _is_png(figures.scaling(widths, tmp_path / "s2.png"))


def test_write_figures_keys(tmp_path):
  runs = [_run(v, 0, seq_len=n, label=f"data.max_length={n}") for v in ("softmax", "linear") for n in (64, 128)]
  out = figures.write_figures(runs, tmp_path, "x")
  assert out == {k: tmp_path / f"x_{k}.png" for k in ("accuracy", "curves", "scaling", "sweep")}
  assert all(_is_png(p) for p in out.values())


def test_sweep_axis(tmp_path):
  """MQAR-style grid: width on x, one panel per (tied) length setting, a line per variant."""
  label = "data.seq_len={},data.num_kv={},model.d_model={},model.mlp_dim={}"
  runs = [
    _run(v, s, task="mqar", label=label.format(n, n // 16, d, 2 * d))
    for v in ("softmax", "based")
    for n in (64, 128)
    for d in (32, 64, 128)
    for s in range(2)
  ]
  x_key, panels = figures._sweep_series(runs)
  assert x_key == "model.d_model"
  assert list(panels) == ["mqar, data.seq_len=64, data.num_kv=4", "mqar, data.seq_len=128, data.num_kv=8"]
  assert panels["mqar, data.seq_len=64, data.num_kv=4"]["based"] == {
    32.0: [0.3, 0.31],
    64.0: [0.3, 0.31],
    128.0: [0.3, 0.31],
  }
  assert _is_png(figures.sweep(runs, tmp_path / "sweep.png"))
  # an ablation at one width (a key only some runs set): its own panel, never pooled with the main runs
  ablation = [
    {**_run("based", s, task="mqar", label=label.format(64, 4, 64, 128) + ",model.conv_kernel=0"), "test_accuracy": 0.1}
    for s in range(2)
  ]
  _, panels = figures._sweep_series(runs + ablation)
  assert panels["mqar, data.seq_len=64, data.num_kv=4"]["based"][64.0] == [0.3, 0.31]
  assert panels["mqar, data.seq_len=64, data.num_kv=4, model.conv_kernel=0"] == {"based": {64.0: [0.1, 0.1]}}
  lengths_only = [_run("softmax", 0, label=f"data.max_length={n}") for n in (32, 64)]
  assert figures._sweep_series(lengths_only)[0] == "data.max_length"  # no width: the numeric axis there is
  no_axis = [_run("softmax", 0, label="data.target=regression"), _run("softmax", 0, label="data.target=binary")]
  assert figures.sweep(no_axis, tmp_path / "n.png") is None and not (tmp_path / "n.png").exists()
  assert figures.sweep([_run("softmax", 0)], tmp_path / "n.png") is None


def test_display_names_drop_the_task_and_shared_settings():
  names = figures._display_names(
    [
      ("softmax", "data.max_bytes=512,task=text_cls"),
      ("softmax", "data.max_bytes=512,task=retrieval"),
      ("linear", "data.max_bytes=512,task=text_cls"),
    ]
  )
  # the task is the bar group and max_bytes is shared: one "softmax" series (one colour) across both tasks
  assert names == {
    ("softmax", "data.max_bytes=512,task=text_cls"): "softmax",
    ("softmax", "data.max_bytes=512,task=retrieval"): "softmax",
    ("linear", "data.max_bytes=512,task=text_cls"): "linear",
  }
  grid = figures._display_names(
    [("softmax", "data.seq_len=64,model.d_model=32"), ("softmax", "data.seq_len=64,model.d_model=64")]
  )
  assert list(grid.values()) == ["softmax [d_model=32]", "softmax [d_model=64]"]  # keys shortened, shared dropped
  # two keys with one last part keep their full names; a tuple value keeps its commas
  clash = figures._display_names([("a", "data.size=1,model.size=2"), ("a", "data.size=2,model.size=2")])
  assert list(clash.values()) == ["a [data.size=1]", "a [data.size=2]"]
  assert tables.parse_label("model.window=(4, 8),seed=1") == [("model.window", "(4, 8)"), ("seed", "1")]


def test_series_differing_only_in_task_merge_but_other_collisions_keep_full_labels():
  # a bare label and `task=x` in one task would both shorten to "softmax": keep the full names instead
  names = figures._display_names([("softmax", ""), ("softmax", "task=listops")])
  assert names == {("softmax", ""): "softmax", ("softmax", "task=listops"): "softmax [task=listops]"}
