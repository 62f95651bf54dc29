"""The linearization retention report (research/eval/retention.py): students read from linearize runs, the
teacher-vs-student match, retained fractions, caching, speed with extended positions, attention maps, the files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from research import linearize as lz
from research.cli import main
from research.data import corpora
from research.data.tokenizer import ByteTokenizer
from research.embed import Embedder
from research.eval import retention
from tests.test_linearize import INFO, TEACHER_CFG, config, synthetic_rows, teacher_params  # noqa: F401

needs_wordnet = pytest.mark.skipif(not corpora.installed("wordnet"), reason="corpus wordnet is not installed")
SCORES = {
  "tiny": 0.9,
  "hedgehog (untrained swap)": 0.6,
  "hedgehog (distilled)": 0.8,
  "performer (untrained swap)": 0.55,
  "performer (distilled)": 0.55,
}


def tiny_teacher(params) -> Embedder:
  return Embedder(
    TEACHER_CFG,
    {"params": params},
    ByteTokenizer(),
    max_tokens=TEACHER_CFG.max_len,
    add_cls=True,
    add_sep=True,
    pooling="mean",
    normalize=True,
    name="tiny",
  )


def fake_quality(calls: list):
  """Quality results shaped like polysemy's, with one score per encoder name (the tasks themselves are tested in
  test_polysemy.py)."""

  def quality(emb, pairs, log):
    calls.append(emb.name)
    v = SCORES[emb.name]
    return {
      "wic": {
        "layers": [
          {"layer": 0, "val_accuracy": 0.6, "test_accuracy": v - 0.1},
          {"layer": 2, "val_accuracy": 0.7, "test_accuracy": v},
        ],
        "baseline": 0.5,
        "counts": {"test": {"pairs": 10}},
      },
      "sentiment": {"test_accuracy": v, "majority_test_accuracy": 0.6, "counts": {"test": 10}},
      "xling": {"pairs": [{"recall_at_1_a_to_b": v, "recall_at_1_b_to_a": v - 0.1, "chance": 0.1}]},
    }

  return quality


@pytest.fixture(scope="module")
def students(teacher_params, tmp_path_factory):  # noqa: F811
  """Two finished linearize runs of the tiny teacher: hedgehog (both stages) and performer (nothing trained)."""
  root = tmp_path_factory.mktemp("students")
  data = lz.Batches(synthetic_rows(40, seed=2), synthetic_rows(10, seed=3))
  for name, extra in (("hedgehog", ""), ("performer", "feature_map=performer,attention_cfg.num_features=8")):
    c = config(extra)
    c.data.corpora = ("wordnet",)
    if name == "performer":
      c.stage2.steps = 0
    lz.linearize(
      c, root / name, progress=False, teacher=(TEACHER_CFG, teacher_params, ByteTokenizer(), INFO), data=data
    )
  return root


def test_retained_is_the_fraction_of_the_teachers_gap_over_chance():
  teacher = {
    "headline": {
      "wic_test_best_val_layer": 0.9,
      "sentiment_test": 0.9,
      "xling_recall_at_1": 0.85,
      "wic_test_last_layer": 0.8,
    },
    "wic": {"baseline": 0.5},
    "sentiment": {"majority_test_accuracy": 0.6},
    "xling": {"pairs": [{"chance": 0.1}, {"chance": 0.3}]},
  }
  student = {
    "headline": {
      "wic_test_best_val_layer": 0.8,
      "sentiment_test": 0.7,
      "xling_recall_at_1": 0.2,
      "wic_test_last_layer": 0.8,
    }
  }
  r = retention.retained(student, teacher)
  assert r["wic_test_best_val_layer"] == pytest.approx(0.3 / 0.4)
  assert r["sentiment_test"] == pytest.approx(0.1 / 0.3)
  assert r["xling_recall_at_1"] == pytest.approx(0.0)  # at chance (mean of the pairs' chances: 0.2)
  assert r["mean"] == pytest.approx(np.mean([0.75, 1 / 3, 0.0]))
  assert retention.retained(teacher, teacher)["mean"] == pytest.approx(1.0)
  teacher["headline"]["sentiment_test"] = 0.6  # the teacher at chance: that task has no gap to retain
  assert retention.retained(student, teacher)["sentiment_test"] is None


def test_extended_positions_tile_the_table_and_keep_short_inputs(teacher_params):  # noqa: F811
  variables = {"params": teacher_params}
  cfg, ext = retention.extend_positions(TEACHER_CFG, variables, 80)
  table, tiled = np.asarray(teacher_params["pos_embedding"]), np.asarray(ext["params"]["pos_embedding"])
  assert cfg.max_len == 80 and tiled.shape == (80, TEACHER_CFG.d_model)
  np.testing.assert_array_equal(tiled[32:64], table)
  np.testing.assert_array_equal(tiled[64:], table[:16])
  assert retention.extend_positions(TEACHER_CFG, variables, 32) == (TEACHER_CFG, variables)
  tokens = np.arange(5, 25, dtype=np.int32)[None]  # within the original table, the output is unchanged
  out = [
    Embedder(c, v, ByteTokenizer(), max_tokens=c.max_len, add_cls=False, add_sep=False)._forward(
      v, tokens, np.array([20], np.int32), layers=(-1,)
    )
    for c, v in ((TEACHER_CFG, variables), (cfg, ext))
  ]
  np.testing.assert_allclose(np.asarray(out[0]), np.asarray(out[1]), atol=1e-6)


@needs_wordnet
def test_a_student_equal_to_the_teacher_matches_exactly(teacher_params, students):  # noqa: F811
  teacher = tiny_teacher(teacher_params)
  rows = retention.held_out_rows(teacher, retention.read_student(students / "hedgehog"), rows_per_corpus=6)
  assert len(rows.lengths) == 6 and rows.tokens.shape[1] == TEACHER_CFG.max_len
  m = retention.match(teacher, teacher, rows)
  assert m["cosine"] == pytest.approx(1.0, abs=1e-6) and m["mse"] == pytest.approx(0.0, abs=1e-10)
  assert abs(m["attn_kl"]) < 1e-5
  maps = retention.attention_maps(teacher, [("itself", teacher)], "a small sentence")
  assert maps["tokens"][0] == "[CLS]" and maps["tokens"][-1] == "[SEP]" and len(maps["tokens"]) == 18
  assert maps["layers"] == [0, 1] and np.allclose(maps["kl"]["itself"], 0.0, atol=1e-6)
  np.testing.assert_allclose(np.sum(maps["maps"]["teacher"], axis=-1), 1.0, atol=1e-5)  # softmax rows


@needs_wordnet
def test_report_runs_caches_and_writes(teacher_params, students, tmp_path, monkeypatch, capsys):  # noqa: F811
  calls = []
  monkeypatch.setattr(retention, "quality", fake_quality(calls))
  teacher = tiny_teacher(teacher_params)
  dirs = [students / "hedgehog", students / "performer"]
  kwargs = dict(workdir=tmp_path / "cache", rows_per_corpus=4, lengths=(16, 64), teacher=teacher, log=lambda m: None)
  result = retention.run(dirs, **kwargs)
  assert calls == [
    "tiny",
    "hedgehog (untrained swap)",
    "hedgehog (distilled)",
    "performer (untrained swap)",
    "performer (distilled)",
  ]
  entries = {e["name"]: e for e in result["entries"]}
  assert [e["role"] for e in result["entries"]] == ["teacher", "swap", "student", "swap", "student"]
  student, swap = entries["hedgehog (distilled)"], entries["hedgehog (untrained swap)"]
  assert student["retained"]["wic_test_best_val_layer"] == pytest.approx((0.8 - 0.5) / (0.9 - 0.5))
  assert student["headline"]["xling_recall_at_1"] == pytest.approx(0.75)
  assert entries["tiny"]["match"] is None and student["match"]["rows"] == 4
  # performer trained nothing: its student is exactly the swap
  perf = entries["performer (distilled)"]["match"], entries["performer (untrained swap)"]["match"]
  assert perf[0]["cosine"] == pytest.approx(perf[1]["cosine"], abs=1e-7) and perf[0]["cosine"] < 1.0
  assert student["match"]["cosine"] != pytest.approx(swap["match"]["cosine"], abs=1e-6)
  curves = {s["feature_map"]: s["curves"] for s in result["students"]}
  assert curves["hedgehog"]["held_out"]["step"] == [0, 5, 8, 10, 15, 16]
  assert len(curves["hedgehog"]["train"]["kl"]) == 8 and len(curves["hedgehog"]["train"]["kl"][0]) == 2
  assert curves["performer"]["train"]["step"] == []
  speed = result["speed"]
  assert [(r["model"], r["length"], r["beyond_trained"]) for r in speed] == [
    ("tiny", 16, False),
    ("hedgehog (distilled)", 16, False),
    ("performer (distilled)", 16, False),
    ("tiny", 64, True),
    ("hedgehog (distilled)", 64, True),
    ("performer (distilled)", 64, True),
  ]
  assert all(r["fwd_s"] > 0 and r["memory_bytes"] > 0 for r in speed)
  assert speed[3]["temp_bytes"] > speed[0]["temp_bytes"]  # softmax scores grow with length

  calls.clear()
  again = retention.run(dirs, **kwargs)  # every quality entry from the cache
  assert calls == [] and [e["match"] for e in again["entries"]] == [e["match"] for e in result["entries"]]
  key = next(p for p in (tmp_path / "cache").glob("student-hedgehog-*.json"))
  key.write_text(json.dumps({**json.loads(key.read_text()), "step": 3}))  # a run with another final step
  retention.run(dirs, **{**kwargs, "lengths": ()})
  assert calls == ["hedgehog (distilled)"]

  paths = retention.write(result, tmp_path / "out", "lin")
  assert {p.name for p in paths.values()} == {
    "lin.json",
    "lin.md",
    "lin_distill.png",
    "lin_attention.png",
    "lin_speed.png",
  }
  md = paths["md"].read_text()
  assert "Kept the most (mean retained): **hedgehog**" in md and "| hedgehog (distilled) |" in md
  assert "64* ms / MiB" in md and json.loads(paths["json"].read_text())["teacher"] == "tiny"


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--student", "/nonexistent/run"], "is not a directory; expected a workdir of research linearize"),
    (["--student", "{tmp}"], "has no summary.json/provenance.json: not a finished run"),
    (["--student", "{tmp}", "--lengths", "512,x"], "--lengths '512,x'; expected comma-separated integers"),
    (["--student", "{tmp}", "--name", "a/b"], "--name 'a/b'; expected a plain file stem"),
  ],
)
def test_cli_bad_input_is_one_error_line(argv, message, tmp_path, capsys):
  rc = main(
    [
      "eval",
      "retention",
      "--workdir",
      str(tmp_path / "cache"),
      "--out",
      str(tmp_path / "out"),
      *[a.replace("{tmp}", str(tmp_path)) for a in argv],
    ]
  )
  err = capsys.readouterr().err
  assert rc == 2 and message in err and err.count("\n") == 1
  assert not (tmp_path / "out").exists()


def test_unfinished_or_mixed_students_are_clear_errors(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "summary.json").write_text(json.dumps({"finished": False, "step": 7}))
  (run / "provenance.json").write_text(json.dumps({"config": {"seed": 0, "data": {}}}))
  with pytest.raises(ValueError, match="stopped at step 7 before the end; resume it"):
    retention.read_student(run)
  make = lambda fm, pct: retention.Student(
    run,
    "minilm",
    fm,
    {},
    0,
    1,
    {
      "corpora": ["wordnet"],  # noqa: E731
      "held_out_percent": pct,
    },
    {},
  )
  with pytest.raises(ValueError, match="different corpora/held-out splits"):
    retention._check_students([make("hedgehog", 5.0), make("based", 10.0)])
  with pytest.raises(ValueError, match="two students share a feature map"):
    retention._check_students([make("hedgehog", 5.0), make("hedgehog", 5.0)])
