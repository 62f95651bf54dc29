"""What a linearized encoder keeps: teacher vs distilled student vs untrained swap, per feature map.

  research eval retention --student runs/linearize/minilm-hedgehog --student runs/linearize/minilm-based \\
      --student runs/linearize/minilm-performer --out results --name linearize_minilm

Every student is a workdir of `research linearize` (research/linearize.py). For each one's feature map three
encoders are compared, all with the teacher's tokenizer, [CLS]/[SEP], pooling and normalisation, at the teacher's
maximum of `max_tokens` (256 for MiniLM, its trained length):

* the teacher (e.g. MiniLM, softmax attention);
* the untrained swap, the floor: the teacher with its softmax mixers replaced by fresh linear ones
  (`linearize.swap_mixers` with the student's feature map, options and seed: the student's own starting point);
* the distilled student (the run's final step).

Quality at <= 256 tokens, each from research/eval/polysemy.py: `match`: on held-out documents of the
distillation corpora (never trained on: the same crc32 split as `research linearize`, first chunk of up to 256
word pieces per document), the cosine of student vs teacher sentence embeddings, hidden-state MSE and the
attention KL per layer (`linearize.evaluate`); WiC frozen accuracy per layer (threshold on val; reported: test at
the layer best on val, and at the last layer); the sentiment logistic probe; xling recall@1 in both directions.
`retained` = (student − chance) / (teacher − chance) per task (chance: 50% WiC, the train-majority class for
sentiment, 1/N retrieval), and its mean over tasks: the headline "which feature map kept the most".

Speed and memory (`speed`): a jitted forward pass to the pooled embedding (batch 1, one full-length sequence,
random word pieces, float32) of the teacher and each student at `lengths`: median wall time, tokens/s, and the
compiled program's memory (`memory_analysis()`: temp and temp + arguments + outputs), as `research bench
attention` measures them (its `median_time` and `compiled_memory`). MiniLM has 512 learned positions; beyond them
the table is tiled (position i uses row i mod 512): a speed-only extension — quality is measured at <= 256 only.

Every encoder's quality entry is cached in `workdir` (`<key>.json`; a student's is redone when its run has a newer
final step), so an interrupted report resumes and a re-run after one more student costs one student.
`write` saves `<name>.json`, `<name>.md`, `<name>_distill.png` (held-out attention KL per layer over both stages,
stage-1 train KL faint), `<name>_attention.png` (teacher vs student attention maps for one sentence) and
`<name>_speed.png`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.data.tasks import sentiment, wic, xling
from research.eval import polysemy

SENTENCE = "She sat on the bank of the river and watched the bank's lights across the water."  # attention maps
DEFAULT_LENGTHS = (512, 1024, 2048, 4096, 8192)
XLING_PAIRS = (("en-us", "fr"),)
ROLES = ("teacher", "swap", "student")


# ------------------------------------------------------------------------------------------------- students
@dataclasses.dataclass(frozen=True)
class Student:
  """One `research linearize` run: where it is and what it was made with."""

  workdir: Path
  teacher: str
  feature_map: str
  options: dict
  seed: int
  step: int
  data: dict  # the run's data config (corpora, held_out_percent)
  summary: dict


def read_student(workdir: str | Path) -> Student:
  """A finished linearize run; anything else is one clear error naming the directory."""
  workdir = Path(workdir)
  summary_path, prov_path = workdir / "summary.json", workdir / "provenance.json"
  if not workdir.is_dir():
    raise ValueError(f"--student {str(workdir)!r} is not a directory; expected a workdir of research linearize")
  if not summary_path.is_file() or not prov_path.is_file():
    raise ValueError(
      f"--student {str(workdir)!r} has no summary.json/provenance.json: not a finished run of "
      "research linearize (run it to the end; it resumes from its checkpoints)"
    )
  try:
    summary, config = json.loads(summary_path.read_text()), json.loads(prov_path.read_text())["config"]
  except (json.JSONDecodeError, KeyError) as e:
    raise ValueError(f"--student {str(workdir)!r}: unreadable summary.json/provenance.json ({e})") from None
  if not summary.get("finished"):
    raise ValueError(
      f"--student {str(workdir)!r} stopped at step {summary.get('step')} before the end; resume it "
      "with the same research linearize command"
    )
  return Student(
    workdir,
    summary["teacher"],
    summary["feature_map"],
    dict(summary.get("attention_cfg") or {}),
    int(config.get("seed", 0)),
    int(summary["step"]),
    dict(config["data"]),
    summary,
  )


def _check_students(students: Sequence[Student]) -> None:
  if not students:
    raise ValueError("no --student given; pass the workdirs of research linearize runs")
  teachers = {s.teacher for s in students}
  if len(teachers) != 1:
    raise ValueError(f"the students have different teachers {sorted(teachers)}; compare one teacher at a time")
  splits = {(tuple(s.data["corpora"]), float(s.data["held_out_percent"])) for s in students}
  if len(splits) != 1:
    raise ValueError(
      f"the students were trained with different corpora/held-out splits {sorted(splits)}; their "
      "held-out text would differ"
    )
  names = [s.feature_map for s in students]
  if len(set(names)) != len(names):
    raise ValueError(f"two students share a feature map ({names}); give one run per feature map")


# ------------------------------------------------------------------------------------------------- encoders
def _like(teacher, cfg, variables, name: str):
  """An Embedder with the teacher's tokenizer and conventions around another encoder."""
  from research.embed import Embedder

  return Embedder(
    cfg,
    variables,
    teacher.tokenizer,
    max_tokens=teacher.max_tokens,
    add_cls=teacher.add_cls,
    add_sep=teacher.add_sep,
    pooling=teacher.pooling,
    normalize=teacher.normalize,
    name=name,
  )


def swap_embedder(teacher, student: Student):
  from research.linearize import swap_mixers

  cfg, variables = swap_mixers(
    teacher.cfg, teacher.variables["params"], student.feature_map, student.options, seed=student.seed
  )
  return _like(teacher, cfg, variables, f"{student.feature_map} (untrained swap)")


def student_embedder(teacher, student: Student):
  from research.linearize import load_student

  emb = load_student(student.workdir)
  return _like(teacher, emb.cfg, emb.variables, f"{student.feature_map} (distilled)")


# ------------------------------------------------------------------------------------------------- quality
def held_out_rows(teacher, student: Student, rows_per_corpus: int):
  """The held-out documents' first chunks at the teacher's max_tokens (no training rows are built)."""
  from research.linearize import corpus_batches

  return corpus_batches(
    teacher.tokenizer,
    tuple(student.data["corpora"]),
    teacher.max_tokens,
    max_documents=0,
    max_rows=0,
    held_out_percent=float(student.data["held_out_percent"]),
    held_out_rows=rows_per_corpus,
    seed=student.seed,
  ).held_out


def match(teacher, emb, rows, batch_size: int = 16) -> dict[str, float]:
  from research.linearize import evaluate

  t0 = time.perf_counter()
  out = evaluate(emb.cfg, emb.variables, teacher.cfg, teacher.variables["params"], rows, batch_size)
  return {
    **out,
    "rows": int(len(rows.lengths)),
    "tokens": int(rows.lengths.sum()),
    "seconds": round(time.perf_counter() - t0, 2),
  }


def quality(emb, xling_pairs: Sequence[tuple[str, str]], log: Callable[[str], Any] = print) -> dict[str, Any]:
  """WiC per layer, the sentiment probe and xling retrieval of one embedder."""
  log(f"{emb.name}: WiC (every layer)")
  w = polysemy.wic_frozen(emb, wic.Config(), list(range(emb.cfg.num_layers + 1)))
  log(f"{emb.name}: sentiment probe")
  s = polysemy.sentiment_probe(emb, sentiment.Config())
  log(f"{emb.name}: xling {', '.join('-'.join(p) for p in xling_pairs)}")
  x = polysemy.xling_retrieval(emb, [xling.Config(pair=tuple(p)) for p in xling_pairs])
  return {"wic": w, "sentiment": s, "xling": x}


def headline(entry: dict[str, Any]) -> dict[str, float]:
  """The numbers of the table: WiC test at the best-val layer and the last layer, sentiment test, mean recall@1."""
  layers = entry["wic"]["layers"]
  best = max(layers, key=lambda r: (r["val_accuracy"], -r["layer"]))
  recalls = [r[k] for r in entry["xling"]["pairs"] for k in ("recall_at_1_a_to_b", "recall_at_1_b_to_a")]
  return {
    "wic_best_layer": best["layer"],
    "wic_test_best_val_layer": best["test_accuracy"],
    "wic_test_last_layer": layers[-1]["test_accuracy"],
    "sentiment_test": entry["sentiment"]["test_accuracy"],
    "xling_recall_at_1": float(np.mean(recalls)),
  }


def chances(entry: dict[str, Any]) -> dict[str, float]:
  return {
    "wic_test_best_val_layer": entry["wic"]["baseline"],
    "wic_test_last_layer": entry["wic"]["baseline"],
    "sentiment_test": entry["sentiment"]["majority_test_accuracy"],
    "xling_recall_at_1": float(np.mean([r["chance"] for r in entry["xling"]["pairs"]])),
  }


RETAINED = ("wic_test_best_val_layer", "sentiment_test", "xling_recall_at_1")


def retained(entry: dict[str, Any], teacher: dict[str, Any]) -> dict[str, float | None]:
  """(x − chance) / (teacher − chance) per task in RETAINED, and their mean."""
  mine, ref, floor = entry["headline"], teacher["headline"], chances(teacher)
  out = {}
  for k in RETAINED:
    gap = ref[k] - floor[k]
    out[k] = None if gap <= 0 else (mine[k] - floor[k]) / gap
  values = [v for v in out.values() if v is not None]
  out["mean"] = float(np.mean(values)) if values else None
  return out


# ------------------------------------------------------------------------------------------------- speed
def extend_positions(cfg, variables: dict, length: int):
  """(cfg, variables) accepting `length` tokens: a learned position table shorter than that is tiled (position i
  uses row i mod max_len) — for timing only."""
  if length <= cfg.max_len:
    return cfg, variables
  if cfg.positions != "learned":
    return dataclasses.replace(cfg, max_len=length), variables
  table = variables["params"]["pos_embedding"]
  tiled = jnp.tile(table, (math.ceil(length / cfg.max_len), 1))[:length]
  return (
    dataclasses.replace(cfg, max_len=length),
    {**variables, "params": {**variables["params"], "pos_embedding": tiled}},
  )


def speed(
  models: Sequence[tuple[str, Any]],
  lengths: Sequence[int],
  *,
  trained_length: int,
  batch: int = 1,
  repeats: int = 3,
  max_seconds: float = 30.0,
  log: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
  """Rows (model, length, fwd_s, tokens_s, temp_bytes, memory_bytes, compile_s, beyond_trained) of a jitted forward
  pass to the pooled embedding. `models`: (label, Embedder) pairs."""
  from research.attention.masks import Segments
  from research.bench.attention import _compile, compiled_memory, median_time
  from research.linearize import pooled
  from research.models.encoder import Encoder

  rows = []
  for length in lengths:
    tokens = jax.random.randint(jax.random.key(length), (batch, length), 1000, 20_000, jnp.int32)
    lens = jnp.full((batch,), length, jnp.int32)
    for label, emb in models:
      cfg, variables = extend_positions(emb.cfg, emb.variables, length)
      cfg = dataclasses.replace(cfg, capture_attention=False)

      def fwd(variables, tokens, lens, cfg=cfg):
        out = Encoder(cfg).apply(variables, tokens, Segments.from_lengths(lens, tokens.shape[1]))
        return pooled(out, jnp.arange(tokens.shape[1])[None, :] < lens[:, None])

      compiled, compile_s = _compile(jax.jit(fwd), (variables, tokens, lens))
      temp, total = compiled_memory(compiled)
      seconds, done = median_time(lambda c=compiled, a=(variables, tokens, lens): c(*a), repeats, 1, max_seconds)
      rows.append(
        {
          "model": label,
          "length": int(length),
          "fwd_s": seconds,
          "tokens_s": batch * length / seconds,
          "temp_bytes": temp,
          "memory_bytes": total,
          "compile_s": compile_s,
          "repeats_done": done,
          "beyond_trained": length > trained_length,
        }
      )
      log(f"speed {label} @ {length}: {seconds * 1e3:.1f} ms, {total / 2**20:.0f} MiB compiled")
  return rows


# ------------------------------------------------------------------------------------------------- run
def _key(role: str, student: Student | None, teacher_name: str) -> str:
  if role == "teacher":
    return f"teacher-{teacher_name}"
  digest = hashlib.sha1(json.dumps(student.options, sort_keys=True).encode()).hexdigest()[:8]
  return f"{role}-{student.feature_map}-seed{student.seed}-{digest}"


def _cached(path: Path, expect: dict) -> dict | None:
  if not path.is_file():
    return None
  try:
    entry = json.loads(path.read_text())
  except json.JSONDecodeError:
    return None
  return entry if all(entry.get(k) == v for k, v in expect.items()) else None


def quality_entry(
  role: str,
  student: Student | None,
  build: Callable[[], Any],
  *,
  teacher,
  teacher_name: str,
  rows,
  cache: Path,
  xling_pairs,
  rows_per_corpus: int,
  log: Callable[[str], Any],
) -> dict[str, Any]:
  """One encoder's match + quality, from `cache` when it holds this key with the same settings (and, for a
  student, the same final step)."""
  key = _key(role, student, teacher_name)
  expect = {
    "xling_pairs": [list(p) for p in xling_pairs],
    "rows_per_corpus": rows_per_corpus,
    "max_tokens": teacher.max_tokens,
    "key": key,
    "step": student.step if role == "student" else None,
  }
  found = _cached(cache / f"{key}.json", expect)
  if found is not None:
    log(f"{key}: cached in {cache}")
    return found
  emb, tic = build(), time.perf_counter()
  out = {
    **expect,
    "role": role,
    "name": emb.name,
    "feature_map": None if student is None else student.feature_map,
    "source": teacher_name if student is None else str(student.workdir),
    "match": None if role == "teacher" else match(teacher, emb, rows),
    **quality(emb, xling_pairs, log),
  }
  out["headline"] = headline(out)
  out["seconds"] = round(time.perf_counter() - tic, 2)
  (cache / f"{key}.json").write_text(json.dumps(out, indent=2, sort_keys=True))
  return out


def run(
  student_dirs: Sequence[str | Path],
  *,
  workdir: str | Path,
  xling_pairs=XLING_PAIRS,
  rows_per_corpus: int = 64,
  lengths: Sequence[int] = DEFAULT_LENGTHS,
  log: Callable[[str], Any] = print,
  teacher=None,
) -> dict[str, Any]:
  """The retention report's data (module docstring). `teacher`: an Embedder instead of the students' pretrained
  teacher (tests)."""
  from research.config import writable_dir
  from research.embed import Embedder

  t0 = time.perf_counter()
  students = [read_student(d) for d in student_dirs]
  _check_students(students)
  cache = writable_dir(workdir, "workdir", "pass a writable --workdir")
  teacher_name = students[0].teacher
  teacher = teacher or Embedder.from_pretrained(teacher_name)
  rows = held_out_rows(teacher, students[0], rows_per_corpus)
  log(
    f"held-out rows: {len(rows.lengths)} (up to {teacher.max_tokens} word pieces, {int(rows.lengths.sum()):,} tokens)"
  )
  ctx = dict(
    teacher=teacher,
    teacher_name=teacher_name,
    rows=rows,
    cache=cache,
    xling_pairs=xling_pairs,
    rows_per_corpus=rows_per_corpus,
    log=log,
  )
  entry = functools.partial(quality_entry, **ctx)
  ref = entry("teacher", None, lambda: teacher)
  entries, models = [ref], [(teacher_name, teacher)]
  for s in students:
    emb = student_embedder(teacher, s)
    entries.append(entry("swap", s, lambda s=s: swap_embedder(teacher, s)))
    entries.append(entry("student", s, lambda emb=emb: emb))
    models.append((emb.name, emb))
  for e in entries:
    e["retained"] = retained(e, ref)
  result = {
    "teacher": teacher_name,
    "max_tokens": teacher.max_tokens,
    "xling_pairs": [list(p) for p in xling_pairs],
    "held_out": {
      "rows": int(len(rows.lengths)),
      "tokens": int(rows.lengths.sum()),
      "corpora": list(students[0].data["corpora"]),
    },
    "entries": entries,
    "students": [
      {
        "feature_map": s.feature_map,
        "workdir": str(s.workdir),
        "options": s.options,
        "seed": s.seed,
        **{
          k: s.summary.get(k)
          for k in (
            "step",
            "stage1_steps",
            "stage2_steps",
            "stage1_skipped",
            "s_per_step",
            "wall_s",
            "batch_size",
            "max_tokens",
            "device",
            "train_rows",
          )
        },
        "curves": distill_curves(s.workdir),
      }
      for s in students
    ],
    "attention_maps": attention_maps(teacher, models[1:]),
    "speed": speed(models, lengths, trained_length=teacher.max_tokens, log=log) if lengths else [],
    "device": jax.devices()[0].device_kind,
  }
  result["seconds"] = round(time.perf_counter() - t0, 2)
  return result


def distill_curves(workdir: Path) -> dict[str, Any]:
  """Per-layer attention KL of a linearize run: held-out rows (every stage) and stage-1 train rows."""
  from research.train.metrics import read_metrics

  def layers(row):
    return [row[k] for k in sorted((k for k in row if k.startswith("kl_layer")), key=lambda k: int(k[8:]))]

  rows = read_metrics(workdir)
  held = [r for r in rows if r["split"] == "held_out"]
  train = [r for r in rows if r["split"] == "train" and r.get("stage") == 1 and "kl_layer0" in r]
  return {
    "held_out": {
      "step": [r["step"] for r in held],
      "stage": [r.get("stage") for r in held],
      "kl": [layers(r) for r in held],
      "cosine": [r["cosine"] for r in held],
    },
    "train": {"step": [r["step"] for r in train], "kl": [layers(r) for r in train]},
  }


def attention_maps(
  teacher,
  students: Sequence[tuple[str, Any]],
  sentence: str = SENTENCE,
  layers: Sequence[int] | None = None,
  head: int = 0,
) -> dict[str, Any]:
  """Attention weights of `head` at `layers` for one sentence: the teacher's softmax rows and each student's
  implied weights (lists, for the JSON and the plot), with each map's KL from the teacher's."""
  from research.linearize import forward

  ids, spans = teacher.tokenize(sentence)
  ids, spans = teacher.with_specials(ids[: teacher.capacity], spans[: teacher.capacity])  # the first pieces that fit
  labels = [sentence[a:b] if b > a else ("[CLS]" if i == 0 else "[SEP]") for i, (a, b) in enumerate(spans)]
  tokens = jnp.asarray([ids], jnp.int32)
  lengths = jnp.asarray([len(ids)], jnp.int32)
  n = teacher.cfg.num_layers
  layers = list(layers if layers is not None else sorted({0, n // 2, n - 1}))

  def maps(emb):
    _, w = forward(emb.cfg, emb.variables, tokens, lengths, capture=True)
    return np.asarray(w[:, 0, head], np.float64)[layers]  # [layers, L, L]

  ref = maps(teacher)
  out = {
    "sentence": sentence,
    "tokens": labels,
    "layers": layers,
    "head": head,
    "maps": {"teacher": ref.tolist()},
    "kl": {},
  }
  for name, emb in students:
    m = maps(emb)
    out["maps"][name] = m.tolist()
    out["kl"][name] = [
      float(np.sum(ref[i] * (np.log(np.maximum(ref[i], 1e-12)) - np.log(np.maximum(m[i], 1e-12)))) / len(ids))
      for i in range(len(layers))
    ]
  return out


# ------------------------------------------------------------------------------------------------- write
_pct = polysemy._pct


def _num(x: float | None, digits: int = 3) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
  t = result["teacher"]
  pairs = ", ".join(f"{a}<->{b}" for a, b in result["xling_pairs"])
  h = result["held_out"]
  lines = [
    f"# Linearizing {t}: what the distilled linear-attention students keep",
    "",
    f"- Quality at <= {result['max_tokens']} word pieces (the teacher's trained length). match = student vs "
    f"teacher on {h['rows']} held-out documents of {', '.join(h['corpora'])} ({h['tokens']:,} tokens, never "
    "trained on): cosine of the pooled sentence embeddings, hidden-state MSE over all blocks, attention KL (mean "
    "over layers, heads, query rows).",
    "- WiC: frozen target-word cosine, threshold on val; test accuracy at the layer best on val (and the last "
    f"layer). Sentiment: logistic probe on pooled vectors (VADER tweets, binary). xling: recall@1, mean of both "
    f"directions of {pairs}.",
    "- retained = (student - chance) / (teacher - chance) per task (WiC best-val layer, sentiment, xling), mean "
    "over the three; the untrained swap (teacher weights, fresh linear mixers = the student's start) is the floor.",
    f"- device: {result['device']}; report wall time {result['seconds'] / 60:.1f} min.",
    "",
    "| encoder | cos vs teacher | MSE | attn KL | WiC test % (layer) | WiC last % | sentiment % | xling R@1 % | "
    "retained WiC / sent. / xling | retained (mean) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for e in result["entries"]:
    m, hl, r = e["match"] or {}, e["headline"], e["retained"]
    cos = "1 (itself)" if e["role"] == "teacher" else _num(m.get("cosine"))
    lines.append(
      f"| {e['name']} | {cos} | {_num(m.get('mse'), 4)} | {_num(m.get('attn_kl'))} | "
      f"{_pct(hl['wic_test_best_val_layer'])} ({hl['wic_best_layer']}) | "
      f"{_pct(hl['wic_test_last_layer'])} | "
      f"{_pct(hl['sentiment_test'])} | {_pct(hl['xling_recall_at_1'])} | "
      f"{' / '.join(_num(r[k], 2) for k in RETAINED)} | {_num(r['mean'], 2)} |"
    )
  ref = result["entries"][0]
  ch = chances(ref)
  lines += [
    "",
    f"Chance: WiC {_pct(ch['wic_test_best_val_layer'])}%, sentiment (majority) "
    f"{_pct(ch['sentiment_test'])}%, xling {_pct(ch['xling_recall_at_1'])}%. WiC test has "
    f"{ref['wic']['counts']['test']['pairs']} pairs (SE ~ 2.2 points), sentiment test "
    f"{ref['sentiment']['counts']['test']} tweets.",
    "",
  ]
  students = [e for e in result["entries"] if e["role"] == "student" and e["retained"]["mean"] is not None]
  if students:
    best = max(students, key=lambda e: e["retained"]["mean"])
    closest = max(students, key=lambda e: e["match"]["cosine"])
    lines += [
      f"Kept the most (mean retained): **{best['feature_map']}** ({best['retained']['mean']:.2f}); closest "
      f"to the teacher's embeddings: **{closest['feature_map']}** (cosine {closest['match']['cosine']:.3f}).",
      "",
    ]
  lines += [
    "## Distillation runs",
    "",
    "| feature map | stage-1 steps | stage-2 steps | batch x tokens | s/step (1, 2) | wall (min) | held-out KL "
    "start -> end | held-out cosine start -> end |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for s in result["students"]:
    c = s["curves"]["held_out"]
    kl = [float(np.mean(k)) for k in c["kl"]]
    first_last = lambda xs: f"{_num(xs[0] if xs else None)} -> {_num(xs[-1] if xs else None)}"  # noqa: E731
    sps = s.get("s_per_step") or {}
    lines.append(
      f"| {s['feature_map']} | {s['stage1_steps']}{' (skipped)' if s.get('stage1_skipped') else ''} | "
      f"{s['stage2_steps']} | {s['batch_size']} x {s['max_tokens']} | {_num(sps.get('stage1'), 2)}, "
      f"{_num(sps.get('stage2'), 2)} | {_num((s.get('wall_s') or 0) / 60, 1)} | "
      f"{first_last(kl)} | {first_last(c['cosine'])} |"
    )
  a = result["attention_maps"]
  lines += [
    "",
    f"## Attention maps ({result['teacher']} head {a['head']}, layers {a['layers']})",
    "",
    f'Sentence: "{a["sentence"]}" ({len(a["tokens"])} tokens). KL(teacher || student) per query row, mean:',
    "",
    "| student | " + " | ".join(f"layer {i}" for i in a["layers"]) + " |",
    "|---|" + "---:|" * len(a["layers"]),
  ]
  lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in kl) + " |" for name, kl in a["kl"].items()]
  if result["speed"]:
    trained = result["max_tokens"]
    lens = sorted({r["length"] for r in result["speed"]})
    lines += [
      "",
      f"## Speed and memory (forward to the pooled embedding, batch 1, float32, {result['device']})",
      "",
      f"Lengths > {trained} are speed-only (beyond the teacher's trained length; positions past its table are "
      "tiled). ms = median forward wall time; MiB = compiled memory (temp + arguments + outputs).",
      "",
      "| model | " + " | ".join(f"{n}{'*' if n > trained else ''} ms / MiB" for n in lens) + " |",
      "|---|" + "---:|" * len(lens),
    ]
    for model in dict.fromkeys(r["model"] for r in result["speed"]):
      by = {r["length"]: r for r in result["speed"] if r["model"] == model}
      lines.append(
        f"| {model} | "
        + " | ".join(
          f"{by[n]['fwd_s'] * 1e3:.0f} / {by[n]['memory_bytes'] / 2**20:.0f}" if n in by else "-" for n in lens
        )
        + " |"
      )
  return "\n".join(lines) + "\n"


def plot_distill(result: dict[str, Any], path: Path) -> Path:
  """Held-out attention KL per layer vs step (one panel per student), stage-1 train KL faint, stage boundary."""
  from matplotlib import colormaps

  from research.report import figures

  students = result["students"]
  fig = figures._new_figure(4.2 * len(students), 3.6)
  axes = np.atleast_1d(fig.subplots(1, len(students), sharey=True))
  for ax, s in zip(axes, students, strict=True):
    held, train = s["curves"]["held_out"], s["curves"]["train"]
    n = len(held["kl"][0]) if held["kl"] else 0
    colors = [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]
    for i in range(n):
      if train["kl"]:
        ax.plot(train["step"], [k[i] for k in train["kl"]], color=colors[i], alpha=0.25, linewidth=0.8)
      ax.plot(
        held["step"],
        [k[i] for k in held["kl"]],
        color=colors[i],
        marker="o",
        markersize=3,
        linewidth=1.5,
        label=f"layer {i}",
      )
    if s["stage1_steps"]:
      ax.axvline(s["stage1_steps"], color="0.4", linestyle="--", linewidth=1.0)
    ax.set_title(f"{s['feature_map']}" + (" (no stage 1)" if s.get("stage1_skipped") else ""))
    ax.set_xlabel("step (dashed: stage 1 -> 2)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("attention KL (held-out; faint: train)")
  figures._legend(fig, axes[0].get_legend_handles_labels()[0])
  return figures._save(fig, path)


def plot_attention(result: dict[str, Any], path: Path) -> Path:
  """Rows: teacher and each student; columns: the captured layers (one head)."""
  from matplotlib.colors import PowerNorm

  from research.report import figures

  a = result["attention_maps"]
  names = list(a["maps"])
  cols = len(a["layers"])
  fig = figures._new_figure(2.6 * cols + 0.6, 2.6 * len(names))
  axes = np.asarray(fig.subplots(len(names), cols, squeeze=False))
  ticks = range(len(a["tokens"]))
  for c, layer in enumerate(a["layers"]):
    vmax = float(np.max(a["maps"]["teacher"][c]))
    for r, name in enumerate(names):
      ax = axes[r, c]
      ax.imshow(np.asarray(a["maps"][name][c]), cmap="magma", norm=PowerNorm(0.5, vmin=0.0, vmax=vmax))
      kl = "" if name == "teacher" else f"\nKL {a['kl'][name][c]:.3f}"
      ax.set_title(f"{name}, layer {layer}{kl}", fontsize="small")
      ax.set_xticks([])
      ax.set_yticks(list(ticks) if c == 0 else [])
      if c == 0:
        ax.set_yticklabels(a["tokens"], fontsize=5)
  return figures._save(fig, path)


def plot_speed(result: dict[str, Any], path: Path) -> Path:
  """Forward time and compiled memory vs length (log-log), the speed-only region shaded."""
  from research.report import figures

  rows = result["speed"]
  models = list(dict.fromkeys(r["model"] for r in rows))
  styles = figures._styles(models)
  fig = figures._new_figure(9.0, 3.8)
  axes = fig.subplots(1, 2)
  for ax, key, scale, label in (
    (axes[0], "fwd_s", 1e3, "forward (ms)"),
    (axes[1], "memory_bytes", 2**-20, "compiled memory (MiB)"),
  ):
    for m in models:
      mine = sorted((r for r in rows if r["model"] == m), key=lambda r: r["length"])
      ax.plot(
        [r["length"] for r in mine], [r[key] * scale for r in mine], marker="o", label=m, color=styles[m]["color"]
      )
    ax.axvspan(result["max_tokens"], max(r["length"] for r in rows) * 1.1, color="0.9", zorder=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"tokens (shaded: > {result['max_tokens']}, speed only)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  figures._legend(fig, axes[0].get_legend_handles_labels()[0])
  return figures._save(fig, path)


def write(result: dict[str, Any], out_dir: str | Path, name: str) -> dict[str, Path]:
  """`<out_dir>/<name>.json|.md`, `<name>_distill.png`, `<name>_attention.png`, `<name>_speed.png` (if timed)."""
  from research.report import write_files

  polysemy.check_name(name)
  paths = write_files(out_dir, name, result, markdown(result), plot_distill, "_distill")
  paths["attention_png"] = plot_attention(result, Path(out_dir) / f"{name}_attention.png")
  if result["speed"]:
    paths["speed_png"] = plot_speed(result, Path(out_dir) / f"{name}_speed.png")
  return paths
