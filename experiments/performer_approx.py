"""How well do random features approximate softmax attention? (Performer/FAVOR+, Choromanski et al. 2021)

For Gaussian queries/keys/values (entries N(0, qk_std²); at qk_std 1 the logits q·k/sqrt(d) have unit
variance), the RMS error of the Performer output against exact softmax attention, in units of the RMS of the
values (the exact output is an average of values, so its own RMS shrinks with L and is no stable yardstick),
vs the number of random features m (sequence length fixed)
and vs the sequence length L (m fixed), for orthogonal and i.i.d. positive features (FAVOR+) and the ReLU
kernel (which approximates a different kernel, so its error does not vanish). Mean ± std over independent
feature draws (each draw = one `init` of the registered `performer` mixer, exactly what training uses).

Launch (CPU, a few minutes each):
  .venv/bin/python experiments/performer_approx.py --out results --name performer_approx
  .venv/bin/python experiments/performer_approx.py --out results --name performer_approx_std0.5 --set qk_std=0.5
`size=paper` (accelerator): m up to 512 features, L up to 16,384 (the exact reference is L x L per head) and
32 draws per point:
  python experiments/performer_approx.py --out results --name performer_approx_paper --set size=paper
Measured on CPU: see results/performer_approx.md and the README's reproduced-results section.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import attention
from research.attention.masks import Segments
from research.config import finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(
    dict(
      head_dim=64,
      num_heads=4,
      features=(16, 32, 64, 128, 256),
      length=1024,
      lengths=(128, 256, 512, 1024, 2048, 4096),
      features_at_lengths=64,
      draws=8,
      seed=0,
      qk_std=1.0,
      settings=(("FAVOR+ orthogonal", "softmax", True), ("FAVOR+ iid", "softmax", False), ("ReLU", "relu", True)),
    )
  )
  return finish(c, arg, PRESETS, aliases=None)  # size=tiny: the defaults above (CPU, a few minutes)


PRESETS = {
  "paper": dict(
    features=(16, 32, 64, 128, 256, 512),
    lengths=(256, 1024, 4096, 16384),
    length=4096,
    features_at_lengths=256,
    draws=32,
  ),
}


def errors(c, length: int, num_features: int, kernel: str, orthogonal: bool) -> list[float]:
  """RMS(performer − exact softmax output) / RMS(v), one value per feature draw."""
  rng = np.random.default_rng(c.seed + length)
  shape = (1, length, c.num_heads, c.head_dim)
  q, k = (jnp.asarray(c.qk_std * rng.normal(size=shape), jnp.float32) for _ in range(2))
  v = jnp.asarray(rng.normal(size=shape), jnp.float32)
  segments = Segments.from_batch(
    {"segment_ids": jnp.ones((1, length), jnp.int32), "positions": jnp.arange(length)[None]}
  )
  exact = jax.jit(attention.build("softmax").apply)({}, q, k, v, segments)  # arrays as arguments, not constants
  mixer = attention.build("performer", {"num_features": num_features, "kernel": kernel, "orthogonal": orthogonal})
  apply, init = jax.jit(mixer.apply), jax.jit(mixer.init)
  out = []
  for draw in range(c.draws):
    variables = init(jax.random.key(1000 * draw + c.seed), q, k, v, segments)
    out.append(float(jnp.sqrt(jnp.mean((apply(variables, q, k, v, segments) - exact) ** 2) / jnp.mean(v**2))))
  return out


def run(c, out_dir: Path, stem: str = "performer_approx") -> dict:
  start = time.perf_counter()
  results = {"config": c.to_dict(), "vs_features": {}, "vs_length": {}, "device": jax.devices()[0].device_kind}
  for label, kernel, orthogonal in c.settings:
    results["vs_features"][label] = [(m, *_stats(errors(c, c.length, m, kernel, orthogonal))) for m in c.features]
    results["vs_length"][label] = [
      (n, *_stats(errors(c, n, c.features_at_lengths, kernel, orthogonal))) for n in c.lengths
    ]
    print(label, results["vs_features"][label], results["vs_length"][label], flush=True)
  results["wall_s"] = time.perf_counter() - start  # compiles included
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2))
  _plot(results, c, out_dir / f"{stem}.png")
  (out_dir / f"{stem}.md").write_text(_markdown(results, c))
  return results


def _stats(xs: list[float]) -> tuple[float, float]:
  return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def _markdown(results: dict, c) -> str:
  lines = [
    f"# Performer approximation error (RMS(out − exact) / RMS(v); mean ± std over {c.draws} draws)",
    "",
    f"Gaussian q, k (std {c.qk_std}), v (std 1); head_dim {c.head_dim}, {c.num_heads} heads; "
    f"device {results['device']}; wall time {results['wall_s']:.0f} s (compiles included).",
    "",
    f"## vs number of features (L = {c.length})",
    "",
    "| m | " + " | ".join(results["vs_features"]) + " |",
    "|---:|" + "---:|" * len(results["vs_features"]),
  ]
  for i, m in enumerate(c.features):
    cells = [f"{rows[i][1]:.4f} ± {rows[i][2]:.4f}" for rows in results["vs_features"].values()]
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  lines += [
    "",
    f"## vs sequence length (m = {c.features_at_lengths})",
    "",
    "| L | " + " | ".join(results["vs_length"]) + " |",
    "|---:|" + "---:|" * len(results["vs_length"]),
  ]
  for i, n in enumerate(c.lengths):
    cells = [f"{rows[i][1]:.4f} ± {rows[i][2]:.4f}" for rows in results["vs_length"].values()]
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _plot(results: dict, c, path: Path) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 4.2))
  FigureCanvasAgg(fig)
  ax_m, ax_l = fig.subplots(1, 2)
  for key, ax, xlabel in (("vs_features", ax_m, "random features m"), ("vs_length", ax_l, "sequence length L")):
    for label, rows in results[key].items():
      x, mean, std = (np.array(col) for col in zip(*rows, strict=True))
      ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RMS(out − exact) / RMS(v)")
    ax.grid(alpha=0.3, which="both")
  m = np.array(c.features, float)
  first = results["vs_features"][next(iter(results["vs_features"]))][0][1]
  ax_m.plot(m, first * np.sqrt(m[0] / m), "k--", linewidth=1, label="∝ 1/sqrt(m)")
  ax_m.set_title(f"vs features (L = {c.length})")
  ax_l.set_title(f"vs length (m = {c.features_at_lengths})")
  ax_m.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="results")
  parser.add_argument("--set", default="", help="overrides, e.g. draws=4,length=512")
  parser.add_argument("--name", default="performer_approx", help="output file stem")
  args = parser.parse_args()
  try:
    run(get_config(args.set), Path(args.out), args.name)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
