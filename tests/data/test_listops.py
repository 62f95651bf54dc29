"""Tests for the LRA ListOps generator (research/data/tasks/listops.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from research.data.tasks import listops
from research.data.tasks.listops import (
  CLS_ID,
  NUM_CLASSES,
  PAD_ID,
  VOCAB,
  ListOpsConfig,
  Split,
  build_splits,
  detokenize,
  evaluate,
  generate_expression,
  majority_baseline,
  tokenize,
)

SMALL = ListOpsConfig(num_train=1500, num_val=300, num_test=300, seed=7)

# Configs exercising different corners of the length-targeted generator.
GENERATOR_CONFIGS = [
  ListOpsConfig(),
  ListOpsConfig(max_depth=2, max_args=2, min_length=1, max_length=40),  # gappy lengths {1, 4, 7, 10}
  ListOpsConfig(max_depth=6, max_args=2, min_length=30, max_length=60),  # binary trees: length = 1 mod 3
  ListOpsConfig(max_depth=3, max_args=3, min_length=20, max_length=20),  # one exact length
  ListOpsConfig(max_depth=7, max_args=9, min_length=100, max_length=300),
]


def _structure(tokens: list[str]) -> tuple[int, list[int]]:
  """Maximum operator nesting depth and the argument count of every operator (test-only parser)."""
  counts: list[int] = []
  arities: list[int] = []
  depth = 0
  for token in tokens:
    if counts and token != "]":
      counts[-1] += 1
    if token.startswith("["):
      counts.append(0)
      depth = max(depth, len(counts))
    elif token == "]":
      arities.append(counts.pop())
  assert not counts
  return depth, arities


def _texts(split: Split) -> list[str]:
  return [" ".join(detokenize(row)) for row in split.tokens]


# ------------------------------------------------------------------------------------------ vocabulary
def test_vocabulary_layout():
  assert (PAD_ID, CLS_ID, NUM_CLASSES) == (0, 1, 10)
  assert VOCAB[PAD_ID] == "<pad>" and VOCAB[CLS_ID] == "<cls>"
  assert len(set(VOCAB)) == len(VOCAB) == 17
  assert set(VOCAB[2:]) == {"[MIN", "[MAX", "[MED", "[SM", "]", *"0123456789"}


# ------------------------------------------------------------------------------------------- evaluator
@pytest.mark.parametrize(
  ("expression", "value"),
  [
    ("7", 7),
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[SM 5 6 7 ]", 8),
    ("[MED 3 1 4 1 5 ]", 3),
    ("[MED 1 2 3 8 ]", 2),  # int(np.median) = int(2.5): even counts truncate the mean of the middle pair
    ("[MED 0 9 ]", 4),
    ("[MED 7 7 ]", 7),
    ("[MIN 5 [MAX 1 2 ] 3 ]", 2),
    ("[SM 9 9 9 ]", 7),
    ("[SM [MAX 3 8 ] [MIN 9 6 ] [MED 2 2 9 ] ]", 6),
    ("[MIN [MAX 0 [SM 4 4 [MED 9 9 9 8 ] ] ] 9 ]", 7),
    ("[MAX 4 ]", 4),  # the evaluator accepts one argument (the generator always emits two or more)
  ],
)
def test_evaluate_known_values(expression, value):
  assert evaluate(expression.split()) == value
  assert evaluate(expression) == value  # whitespace-separated string form


@pytest.mark.parametrize(
  ("tokens", "message"),
  [
    ([], "empty"),
    (["]"], "unmatched ']' at position 0"),
    (["[MIN", "1", "]", "]"], "position 3"),
    (["[MAX", "1", "2"], "'\\[MAX' at position 0 is never closed"),
    (["[SM", "1", "[MIN", "2"], "'\\[MIN' at position 2 is never closed"),
    (["[MAX", "]"], "no arguments"),
    (["[MAX", "1", "2", "]", "3"], "'3' at position 4"),
    (["1", "2"], "'2' at position 1"),
    (["[FOO", "1", "]"], "unknown token '\\[FOO' at position 0"),
    (["[MAX", "1", "12", "]"], "unknown token '12' at position 2"),
    (["[MAX", "1", "<pad>", "]"], "unknown token '<pad>' at position 2"),
    (["[MAX", "1", "", "]"], "unknown token '' at position 2"),
  ],
)
def test_evaluate_rejects_malformed(tokens, message):
  with pytest.raises(ValueError, match=message):
    evaluate(tokens)


# ------------------------------------------------------------------------------------------- generator
@pytest.mark.parametrize("cfg", GENERATOR_CONFIGS, ids=lambda c: f"d{c.max_depth}a{c.max_args}")
def test_generator_agrees_with_evaluator_and_respects_config(cfg):
  rng = np.random.default_rng(123)
  lengths = set()
  for _ in range(500):
    tokens, value = generate_expression(rng, cfg)
    assert evaluate(tokens) == value
    assert cfg.min_length <= len(tokens) <= cfg.max_length
    depth, arities = _structure(tokens)
    assert depth <= cfg.max_depth
    assert all(2 <= a <= cfg.max_args for a in arities)
    lengths.add(len(tokens))
  reachable = listops._target_lengths(cfg)
  assert lengths <= set(reachable)
  assert len(lengths) >= min(len(reachable), 10)  # the length is drawn over the whole reachable range


def test_generator_is_deterministic_given_rng():
  a = [generate_expression(np.random.default_rng(5), SMALL) for _ in range(3)]
  b = [generate_expression(np.random.default_rng(5), SMALL) for _ in range(3)]
  assert a == b
  rng = np.random.default_rng(5)
  c = [generate_expression(rng, SMALL) for _ in range(20)]
  assert len({" ".join(t) for t, _ in c}) == 20


def test_short_expressions_still_nest():
  cfg = ListOpsConfig(max_depth=4, max_args=5, min_length=16, max_length=24)
  rng = np.random.default_rng(0)
  depths = [_structure(generate_expression(rng, cfg)[0])[0] for _ in range(300)]
  assert min(depths) >= 2  # 16 tokens cannot be a flat operator (at most 7 tokens with 5 arguments)
  assert np.mean(np.array(depths) >= 3) > 0.2


def _arguments(tokens: list[str]) -> list[tuple[int, bool, int, int, int]]:
  """(level, is_digit, length, index, number of siblings) of every operator argument; root args: level 1."""
  rows = []
  stack: list[tuple[int, list[tuple[bool, int]]]] = []
  for pos, token in enumerate(tokens):
    if token.startswith("["):
      stack.append((pos, []))
    elif token == "]":
      start, args = stack.pop()
      rows += [(len(stack) + 1, digit, n, i, len(args)) for i, (digit, n) in enumerate(args)]
      if stack:
        stack[-1][1].append((False, pos - start + 1))
    elif stack:
      stack[-1][1].append((True, 1))
  return rows


def test_top_levels_favour_operators():
  rng = np.random.default_rng(2)
  rows = np.array([r for _ in range(800) for r in _arguments(generate_expression(rng, ListOpsConfig())[0])])
  digit_share = [rows[rows[:, 0] == level, 1].mean() for level in (1, 2, 3)]
  assert digit_share[0] < 0.35, digit_share
  assert digit_share[0] < digit_share[1] and digit_share[0] < digit_share[2], digit_share


def test_argument_order_is_exchangeable():
  # lengths are split sequentially, then shuffled: the first argument must not be systematically longer
  rng = np.random.default_rng(4)
  rows = np.array([r for _ in range(1000) for r in _arguments(generate_expression(rng, ListOpsConfig())[0])])
  root = rows[rows[:, 0] == 1]
  first, last = root[root[:, 3] == 0, 2].mean(), root[root[:, 3] == root[:, 4] - 1, 2].mean()
  assert 0.75 < first / last < 1.33, (first, last)


def test_operator_mix_is_not_degenerate():
  rng = np.random.default_rng(1)
  tokens = [tok for _ in range(300) for tok in generate_expression(rng, ListOpsConfig())[0]]
  counts = {op: tokens.count(op) for op in ("[MIN", "[MAX", "[MED", "[SM")}
  total = sum(counts.values())
  assert all(0.2 < c / total < 0.3 for c in counts.values()), counts
  digits = np.bincount([int(t) for t in tokens if t.isdigit()], minlength=10)
  assert digits.min() / digits.sum() > 0.08


# ---------------------------------------------------------------------------------------------- splits
@pytest.fixture(scope="module")
def small_splits() -> dict[str, Split]:
  return listops._build_splits_uncached(SMALL)


def test_split_arrays_layout(small_splits):
  sizes = {"train": SMALL.num_train, "val": SMALL.num_val, "test": SMALL.num_test}
  assert set(small_splits) == set(sizes)
  for name, split in small_splits.items():
    n = sizes[name]
    assert split.tokens.shape == (n, SMALL.max_length + 1) and split.tokens.dtype == np.int32
    assert split.lengths.shape == (n,) and split.lengths.dtype == np.int32
    assert split.labels.shape == (n,) and split.labels.dtype == np.int32
    assert len(split) == n
    assert np.all(split.tokens[:, 0] == CLS_ID)
    positions = np.arange(SMALL.max_length + 1)
    inside = positions[None, :] < split.lengths[:, None]
    body = inside & (positions[None, :] > 0)
    assert np.all(split.tokens[~inside] == PAD_ID)
    assert np.all(split.tokens[body] > CLS_ID) and np.all(split.tokens < len(VOCAB))
    assert np.all((split.lengths - 1 >= SMALL.min_length) & (split.lengths - 1 <= SMALL.max_length))
    assert np.all((split.labels >= 0) & (split.labels < NUM_CLASSES))


def test_split_labels_agree_with_evaluator(small_splits):
  checked = 0
  for split in small_splits.values():
    for row, length, label in zip(split.tokens, split.lengths, split.labels, strict=True):
      tokens = detokenize(row)
      assert len(tokens) == length - 1
      assert evaluate(tokens) == label
      checked += 1
  assert checked == SMALL.num_train + SMALL.num_val + SMALL.num_test


def test_lengths_cover_the_range(small_splits):
  lengths = small_splits["train"].lengths - 1
  assert lengths.min() <= SMALL.min_length + 3 and lengths.max() >= SMALL.max_length - 3
  assert abs(np.median(lengths) - (SMALL.min_length + SMALL.max_length) / 2) < 12


def test_splits_disjoint_and_deduplicated(small_splits):
  texts = {name: _texts(split) for name, split in small_splits.items()}
  for name, items in texts.items():
    assert len(set(items)) == len(items), f"duplicate expression in {name}"
    # by construction: the split is a function of the expression text
    assert {listops._split_index(t) for t in items} == {listops._SPLIT_NAMES.index(name)}
  assert not set(texts["train"]) & set(texts["val"])
  assert not set(texts["train"]) & set(texts["test"])
  assert not set(texts["val"]) & set(texts["test"])


def test_split_assignment_does_not_depend_on_seed(small_splits):
  other = listops._build_splits_uncached(dataclasses.replace(SMALL, seed=8, num_train=300))
  assert not set(_texts(small_splits["test"])) & set(_texts(other["train"]))
  assert not set(_texts(small_splits["train"])) & set(_texts(other["test"]))


def test_same_config_gives_bitwise_identical_arrays(small_splits):
  again = listops._build_splits_uncached(SMALL)  # uncached: really regenerate
  for name, split in small_splits.items():
    for field in ("tokens", "lengths", "labels"):
      a, b = getattr(split, field), getattr(again[name], field)
      assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (name, field)


def test_different_seed_gives_different_data(small_splits):
  other = listops._build_splits_uncached(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
  for name, split in small_splits.items():
    assert not np.array_equal(split.tokens, other[name].tokens), name
    overlap = set(_texts(split)) & set(_texts(other[name]))
    assert len(overlap) < 0.01 * len(split), name


def test_split_sizes_do_not_change_other_splits(small_splits):
  smaller = listops._build_splits_uncached(dataclasses.replace(SMALL, num_train=500, num_val=100))
  np.testing.assert_array_equal(smaller["train"].tokens, small_splits["train"].tokens[:500])
  np.testing.assert_array_equal(smaller["val"].labels, small_splits["val"].labels[:100])
  np.testing.assert_array_equal(smaller["test"].tokens, small_splits["test"].tokens)


def test_labels_not_skewed(small_splits):
  counts = np.bincount(small_splits["train"].labels, minlength=NUM_CLASSES)
  assert counts.min() > 0
  assert counts.max() / counts.sum() < 0.2
  label, accuracy = majority_baseline(small_splits)
  assert label == int(np.argmax(counts))
  assert accuracy == pytest.approx(np.mean(small_splits["test"].labels == label))
  assert accuracy < 0.2


def test_build_splits_is_cached_and_read_only():
  cfg = dataclasses.replace(SMALL, num_train=200, num_val=20, num_test=20, seed=99)
  first = build_splits(cfg)
  second = build_splits(ListOpsConfig(**dataclasses.asdict(cfg)))  # equal config, new object
  assert first is not second
  for name in first:
    assert first[name] is second[name]
  second.pop("train")  # mutating a returned dict must not corrupt the cache
  assert "train" in build_splits(cfg)
  with pytest.raises(ValueError, match="read-only"):
    first["train"].tokens[0, 0] = 5


def test_too_few_distinct_expressions_raises():
  # [OP d d ] is the only shape: 4 * 10 * 10 = 400 distinct expressions in all
  cfg = ListOpsConfig(max_depth=1, max_args=2, min_length=4, max_length=4, num_train=1000, num_val=0, num_test=0)
  with pytest.raises(ValueError, match="too few distinct expressions"):
    listops._build_splits_uncached(cfg)


def test_small_space_is_exhausted_exactly():
  # All 400 expressions [OP d d ]: each split can collect exactly the ones hashed into its buckets.
  everything = [f"{op} {a} {b} ]" for op in ("[MIN", "[MAX", "[MED", "[SM") for a in range(10) for b in range(10)]
  per_split = np.bincount([listops._split_index(t) for t in everything], minlength=3)
  assert per_split[0] > 250 and per_split[1] > 0 and per_split[2] > 0  # about 80% / 10% / 10%
  cfg = ListOpsConfig(
    max_depth=1,
    max_args=2,
    min_length=4,
    max_length=4,
    num_train=int(per_split[0]),
    num_val=int(per_split[1]),
    num_test=int(per_split[2]),
  )
  texts = [t for split in listops._build_splits_uncached(cfg).values() for t in _texts(split)]
  assert sorted(texts) == sorted(everything)


# ---------------------------------------------------------------------------------------- baseline
def _split(labels: list[int]) -> Split:
  n = len(labels)
  return Split(
    tokens=np.zeros((n, 2), np.int32),
    lengths=np.ones(n, np.int32),
    labels=np.asarray(labels, np.int32),
  )


def test_majority_baseline_by_hand():
  splits = {"train": _split([3, 3, 1, 7]), "val": _split([1]), "test": _split([3, 0, 0, 3, 3])}
  assert majority_baseline(splits) == (3, 0.6)
  tie = {"train": _split([5, 2, 5, 2]), "test": _split([2, 2, 5, 1])}
  assert majority_baseline(tie) == (2, 0.5)
  with pytest.raises(ValueError, match="non-empty"):
    majority_baseline({"train": _split([1]), "test": _split([])})


# ------------------------------------------------------------------------------------ tokenization
def test_tokenize_detokenize_round_trip(small_splits):
  rng = np.random.default_rng(3)
  for _ in range(200):
    tokens, _ = generate_expression(rng, SMALL)
    ids = tokenize(tokens)
    assert ids.dtype == np.int32 and ids.shape == (len(tokens),)
    assert detokenize(ids) == tokens
    assert [VOCAB[i] for i in ids] == tokens
  row = small_splits["val"].tokens[0]
  assert np.array_equal(tokenize(detokenize(row)), row[1 : small_splits["val"].lengths[0]])
  assert tokenize("[SM 5 6 7 ]").tolist() == [VOCAB.index(t) for t in ["[SM", "5", "6", "7", "]"]]
  assert tokenize([]).shape == (0,)


def test_detokenize_drops_pad_and_cls():
  ids = [CLS_ID, VOCAB.index("[MAX"), VOCAB.index("4"), VOCAB.index("]"), PAD_ID, PAD_ID]
  assert detokenize(np.asarray(ids, np.int32)) == ["[MAX", "4", "]"]
  assert detokenize(ids) == ["[MAX", "4", "]"]


def test_tokenize_rejects_unknown_token():
  with pytest.raises(ValueError, match="'\\[MOD'"):
    tokenize(["[SM", "1", "[MOD", "2", "]"])
  with pytest.raises(ValueError, match="'10'"):
    tokenize("[SM 10 ]")


def test_detokenize_rejects_bad_ids():
  with pytest.raises(ValueError, match="id 17 at position 1"):
    detokenize([2, 17])
  with pytest.raises(ValueError, match="id -1"):
    detokenize(np.array([-1]))
  with pytest.raises(ValueError, match="1-D"):
    detokenize(np.zeros((2, 2), np.int32))


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
  ("kwargs", "field", "value"),
  [
    ({"max_depth": 0}, "max_depth", "0"),
    ({"max_depth": 2.0}, "max_depth", "2.0"),
    ({"max_args": 1}, "max_args", "1"),
    ({"max_args": True}, "max_args", "True"),
    ({"min_length": 0}, "min_length", "0"),
    ({"min_length": 20, "max_length": 19}, "max_length", "19"),
    ({"max_length": "128"}, "max_length", "'128'"),
    ({"num_train": 0}, "num_train", "0"),
    ({"num_val": -1}, "num_val", "-1"),
    ({"num_test": -5}, "num_test", "-5"),
    ({"seed": -1}, "seed", "-1"),
    ({"seed": None}, "seed", "None"),
  ],
)
def test_config_validation_names_field_and_value(kwargs, field, value):
  with pytest.raises(ValueError) as info:
    ListOpsConfig(**kwargs)
  message = str(info.value)
  assert f"ListOpsConfig.{field}" in message and value in message, message


def test_unreachable_length_range_is_rejected():
  with pytest.raises(ValueError, match=r"max_depth=1 .*min_length=16, max_length=128.*reachable lengths"):
    ListOpsConfig(max_depth=1)  # at most 7 tokens with 5 arguments
  with pytest.raises(ValueError, match="reachable lengths <= max_length are 1, 4, 7, 10"):
    ListOpsConfig(max_depth=2, max_args=2, min_length=11, max_length=12)
  ListOpsConfig(max_depth=2, max_args=2, min_length=10, max_length=12)  # 10 is reachable


def test_config_is_hashable_and_normalised():
  cfg = ListOpsConfig(max_depth=np.int64(4), seed=np.int32(0))
  assert cfg == ListOpsConfig() and hash(cfg) == hash(ListOpsConfig())
  assert type(cfg.max_depth) is int
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.seed = 1  # type: ignore[misc]
