"""ListOps, as used by Long Range Arena: a seeded, deterministic generator.

References:
    N. Nangia and S. R. Bowman. "ListOps: A Diagnostic Dataset for Latent Tree Learning."
    NAACL Student Research Workshop, 2018. arXiv:1804.06028.
    Y. Tay, M. Dehghani, S. Abnar, Y. Shen, D. Bahri, P. Pham, J. Rao, L. Yang, S. Ruder and
    D. Metzler. "Long Range Arena: A Benchmark for Efficient Transformers." ICLR 2021. arXiv:2011.04006.

Grammar. An expression is a digit ``0``-``9`` or ``[OP e1 e2 ... ek ]``, with OP one of

* ``MIN`` / ``MAX``: smallest / largest argument;
* ``MED``: ``int(np.median(args))``, exactly as in the LRA generator. For an even number of arguments
  this is the mean of the two middle values truncated towards zero, e.g. ``[MED 1 2 3 8 ] = int(2.5) = 2``;
* ``SM``: sum of the arguments modulo 10.

The label is the value of the whole expression (10 classes). ``[MIN``, ``[MAX``, ``[MED``, ``[SM``,
``]`` and each digit are single tokens. The generator emits 2..``max_args`` arguments per operator and
at most ``max_depth`` nested operators (a digit has depth 0, ``[SM 1 2 ]`` depth 1); :func:`evaluate`
accepts any operator with at least one argument.

Generation is length targeted, not rejection based. For ``(max_depth, max_args, max_length)`` a small
dynamic programme over bitsets records which token counts an expression of depth <= d can have, and
which totals j such expressions can share. An example first draws its token count uniformly from the
reachable counts in ``[min_length, max_length]``; then every operator node draws an arity among those
that can fill its length, splits the length among its arguments (each argument is a digit with a
probability that grows with depth, so the top levels are biased towards operators and even short
expressions nest, otherwise a length drawn uniformly from the feasible ones), shuffles the split,
draws an operator uniformly, and recurses. The value is computed on the way back up. A config whose
length range cannot be reached is refused by :class:`ListOpsConfig` itself.

Splits are disjoint by construction. An expression's split is a function of its text alone: a
personalised BLAKE2b hash of the space-joined tokens picks one of 1000 buckets, 80% of them "train",
10% "val" and 10% "test" (fixed fractions, independent of the seed and of the split sizes, so an
expression is in the same split under every seed). One seeded stream of candidates is routed by
bucket; each split keeps its first ``num_*`` new candidates and skips duplicates, so no expression
occurs twice in the whole dataset. Since the stream does not depend on the split sizes, changing
``num_val`` leaves "train" unchanged, and a smaller ``num_train`` gives a prefix of the larger "train".
:func:`build_splits` memoises its result per config in-process (arrays are read-only); the default
config takes about 2 s on one core.

Labels come out close to uniform (default config: majority class about 11.5%, versus about 17% reported
for LRA's ListOps), because nested MIN/MAX/MED/SM arguments mix their skews.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
  "CLS_ID",
  "NUM_CLASSES",
  "PAD_ID",
  "VOCAB",
  "ListOpsConfig",
  "Split",
  "build_splits",
  "detokenize",
  "evaluate",
  "generate_expression",
  "majority_baseline",
  "tokenize",
]

PAD_ID = 0
CLS_ID = 1
_OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
_CLOSE = "]"
_DIGITS = tuple(str(d) for d in range(10))
VOCAB: tuple[str, ...] = ("<pad>", "<cls>", *_OPERATORS, _CLOSE, *_DIGITS)
NUM_CLASSES = 10

_TOKEN_TO_ID = {tok: i for i, tok in enumerate(VOCAB)}
_OP_BASE_ID = _TOKEN_TO_ID["[MIN"]  # operator o in (MIN, MAX, MED, SM) -> id _OP_BASE_ID + o
_CLOSE_ID = _TOKEN_TO_ID[_CLOSE]
_DIGIT_BASE_ID = _TOKEN_TO_ID["0"]  # digit v -> id _DIGIT_BASE_ID + v

# Probability that an argument at nesting level `level` (the root's arguments are level 1) is a digit,
# when both a digit and a sub-expression fit. Low at the top so that short expressions still nest.
_LEAF_PROB = (0.0, 0.15, 0.3, 0.45, 0.6)
_PROPOSALS = 8  # uniform proposals for an argument length before enumerating the feasible ones
_CHUNK = 1024  # uniforms drawn from the numpy Generator at a time
_MAX_SUPPORTED_LENGTH = 65_536

_SPLIT_NAMES = ("train", "val", "test")
_NUM_BUCKETS = 1000
_BUCKET_UPPER = (800, 900, 1000)  # bucket b belongs to the first split s with b < _BUCKET_UPPER[s]
_BUCKET_FRACTION = (0.8, 0.1, 0.1)
_HASH_PERSON = b"lra-listops-v1"
_STREAM_TAG = 0x4C69_7374  # mixed into the seed so this stream differs from other tasks' streams


# --------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class ListOpsConfig:
  """Generator and split sizes. Validated on construction: a bad value raises ``ValueError``."""

  max_depth: int = 4  # nesting depth of operators
  max_args: int = 5  # max arguments per operator (min 2)
  min_length: int = 16  # token length range of the expression (without CLS)
  max_length: int = 128
  num_train: int = 20_000
  num_val: int = 2_000
  num_test: int = 2_000
  seed: int = 0

  def __post_init__(self) -> None:
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"ListOpsConfig.{field.name} must be an integer, got {value!r} ({type(value).__name__})")
      object.__setattr__(self, field.name, int(value))  # normalise numpy ints for hashing/caching
    lower = {
      "max_depth": (1, "at least 1"),
      "max_args": (2, "at least 2"),
      "min_length": (1, "at least 1"),
      "num_train": (1, "at least 1"),
      "num_val": (0, "non-negative"),
      "num_test": (0, "non-negative"),
      "seed": (0, "non-negative"),
    }
    for name, (bound, expected) in lower.items():
      value = getattr(self, name)
      if value < bound:
        raise ValueError(f"ListOpsConfig.{name} must be {expected}, got {value}")
    if not self.min_length <= self.max_length <= _MAX_SUPPORTED_LENGTH:
      raise ValueError(
        f"ListOpsConfig.max_length must be in [min_length={self.min_length}, "
        f"{_MAX_SUPPORTED_LENGTH}], got {self.max_length}"
      )
    if not _target_lengths(self):
      tables = _tables(self.max_depth, self.max_args, self.max_length)
      reachable = [n for n in range(self.max_length + 1) if tables.feasible[-1][n]]
      raise ValueError(
        f"ListOpsConfig: no expression with max_depth={self.max_depth} and max_args={self.max_args} "
        f"has a length in [min_length={self.min_length}, max_length={self.max_length}]; "
        f"reachable lengths <= max_length are {_ranges(reachable)}. "
        "Raise max_depth or max_args, or change min_length/max_length."
      )


def _ranges(values: Sequence[int]) -> str:
  """[1, 4, 5, 6] -> '1, 4-6' (for error messages)."""
  parts = []
  for _, group in itertools.groupby(enumerate(values), key=lambda iv: iv[1] - iv[0]):
    run = [v for _, v in group]
    parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
  return ", ".join(parts) if parts else "none"


# ------------------------------------------------------------------------------- feasibility tables
@dataclasses.dataclass(frozen=True)
class _Tables:
  max_args: int  # effective arity bound: min(max_args, max_length - 2), at least 2
  longest: tuple[int, ...]  # longest[d]: longest expression (<= max_length) of depth <= d
  feasible: tuple[bytes, ...]  # feasible[d][n] == 1 iff some expression of depth <= d has n tokens
  sums: tuple[tuple[bytes, ...], ...]  # sums[d][j][t] == 1 iff t tokens can hold j such expressions


def _bits_to_bytes(bits: int, size: int) -> bytes:
  return format(bits, f"0{size}b")[::-1].encode("ascii").translate(_BIT_TRANSLATION)


_BIT_TRANSLATION = bytes.maketrans(b"01", b"\x00\x01")


@functools.lru_cache(maxsize=32)
def _tables(max_depth: int, max_args: int, max_length: int) -> _Tables:
  """Bitset DP over token counts <= max_length (bit n of an int <-> count n)."""
  size = max_length + 1
  mask = (1 << size) - 1
  arity = max(2, min(max_args, max_length - 2))  # k arguments need at least k + 2 tokens
  feasible = [0b10]  # depth 0: a digit, one token
  sums: list[list[int]] = []
  for d in range(max_depth):
    if d > 0 and feasible[d] == feasible[d - 1]:  # saturated: deeper nesting adds nothing new
      sums.append(sums[-1])
      feasible.append(feasible[-1])
      continue
    members = [n for n, bit in enumerate(reversed(bin(feasible[d])[2:])) if bit == "1"]
    totals = [1]  # zero expressions fill zero tokens
    for _ in range(arity):
      prev, acc = totals[-1], 0
      for n in members:
        acc |= prev << n
      totals.append(acc & mask)
    sums.append(totals)
    operators = 0
    for k in range(2, arity + 1):
      operators |= totals[k]
    feasible.append(((operators << 2) & mask) | 0b10)  # "[OP" + arguments + "]", or a digit
  return _Tables(
    max_args=arity,
    longest=tuple(f.bit_length() - 1 for f in feasible),
    feasible=tuple(_bits_to_bytes(f, size) for f in feasible),
    sums=tuple(tuple(_bits_to_bytes(t, size) for t in totals) for totals in sums),
  )


def _target_lengths(cfg: ListOpsConfig) -> tuple[int, ...]:
  feasible = _tables(cfg.max_depth, cfg.max_args, cfg.max_length).feasible[cfg.max_depth]
  return tuple(n for n in range(cfg.min_length, cfg.max_length + 1) if feasible[n])


# ----------------------------------------------------------------------------------------- generator
class _Sampler:
  """Draws (token ids, value) pairs; all randomness comes from one numpy Generator, in chunks."""

  def __init__(self, cfg: ListOpsConfig, rng: np.random.Generator) -> None:
    tables = _tables(cfg.max_depth, cfg.max_args, cfg.max_length)
    self._depth = cfg.max_depth
    self._max_args = tables.max_args
    self._longest = tables.longest
    self._feasible = tables.feasible
    self._sums = tables.sums
    self._targets = _target_lengths(cfg)
    self._arities: dict[tuple[int, int], tuple[int, ...]] = {}

    def chunks() -> Iterator[list[float]]:
      while True:
        yield rng.random(_CHUNK).tolist()

    # uniform() -> next float in [0, 1); `next` on a chain is much cheaper than a Python method call
    self._uniform = functools.partial(next, itertools.chain.from_iterable(chunks()))

  def sample(self) -> tuple[list[int], int]:
    length = self._targets[int(self._uniform() * len(self._targets))]
    ids: list[int] = []
    if length == 1:
      digit = int(self._uniform() * 10)
      return [_DIGIT_BASE_ID + digit], digit
    value = self._node(self._depth, length, 1, ids)
    return ids, value

  def _node(self, depth: int, length: int, level: int, out: list[int]) -> int:
    """Appends an operator expression of exactly `length` tokens and depth <= `depth`; returns its value.

    `level` is the nesting level of its arguments (1 for the root's arguments).
    """
    uniform = self._uniform
    arities = self._arities.get((depth, length))
    if arities is None:
      sums = self._sums[depth - 1]
      arities = tuple(k for k in range(2, self._max_args + 1) if sums[k][length - 2])
      self._arities[depth, length] = arities
    arity = arities[int(uniform() * len(arities))] if len(arities) > 1 else arities[0]
    op = int(uniform() * 4)
    out.append(_OP_BASE_ID + op)
    if arity == length - 2:  # all arguments are digits
      values = [int(uniform() * 10) for _ in range(arity)]
      out.extend([_DIGIT_BASE_ID + v for v in values])
    else:
      values = []
      for part in self._split_length(depth - 1, length - 2, arity, level):
        if part == 1:
          value = int(uniform() * 10)
          out.append(_DIGIT_BASE_ID + value)
        else:
          value = self._node(depth - 1, part, level + 1, out)
        values.append(value)
    out.append(_CLOSE_ID)
    if op == 0:
      return min(values)
    if op == 1:
      return max(values)
    if op == 2:  # int(np.median(values)) without numpy: values are non-negative, so // truncates
      values.sort()
      mid = len(values) // 2
      return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2
    return sum(values) % 10

  def _split_length(self, depth: int, total: int, count: int, level: int) -> list[int]:
    """Random lengths of `count` expressions of depth <= `depth` that add up to `total`."""
    uniform = self._uniform
    feasible, sums, longest = self._feasible[depth], self._sums[depth], self._longest[depth]
    leaf_prob = _LEAF_PROB[level] if level < len(_LEAF_PROB) else _LEAF_PROB[-1]
    parts = []
    remaining = total
    for rest in range(count - 1, 0, -1):  # `rest` arguments still to place after this one
      rest_sums = sums[rest]
      digit_fits = rest_sums[remaining - 1]
      part = 0
      if digit_fits and uniform() < leaf_prob:
        part = 1
      else:
        lo = remaining - rest * longest
        if lo < 4:
          lo = 4
        hi = remaining - rest
        if hi > longest:
          hi = longest
        if lo <= hi:
          span = hi - lo + 1
          for _ in range(_PROPOSALS):
            guess = lo + int(uniform() * span)
            if feasible[guess] and rest_sums[remaining - guess]:
              part = guess
              break
          else:
            fits = [n for n in range(lo, hi + 1) if feasible[n] and rest_sums[remaining - n]]
            if fits:
              part = fits[int(uniform() * len(fits))]
        if not part:
          if not digit_fits:  # unreachable: callers only ask for feasible totals
            raise AssertionError(f"no split of {total} tokens into {count} expressions")
          part = 1
      parts.append(part)
      remaining -= part
    parts.append(remaining)
    for i in range(count - 1, 0, -1):  # Fisher-Yates: no positional bias in argument lengths
      j = int(uniform() * (i + 1))
      parts[i], parts[j] = parts[j], parts[i]
    return parts


def generate_expression(rng: np.random.Generator, cfg: ListOpsConfig) -> tuple[list[str], int]:
  """One random expression (tokens, without CLS) of a length in the config's range, and its value.

  Deterministic given the state of `rng` (which it advances by whole chunks of uniforms).
  """
  ids, value = _Sampler(cfg, rng).sample()
  return [VOCAB[i] for i in ids], value


# ----------------------------------------------------------------------------------------- evaluator
def _median(args: list[int]) -> int:
  return int(np.median(args))  # LRA's definition: even counts average the middle pair, then truncate


_EVALUATORS = {
  "[MIN": min,
  "[MAX": max,
  "[MED": _median,
  "[SM": lambda args: int(np.sum(args)) % 10,
}
_DIGIT_VALUES = {str(d): d for d in range(10)}


def evaluate(tokens: Sequence[str] | str) -> int:
  """Value of an expression, by an explicit stack parser independent of the generator.

  `tokens` is a sequence of tokens or a whitespace-separated string. Raises ``ValueError`` naming the
  (0-based) token position on malformed input: unknown token, unmatched ``]``, operator without
  arguments, unclosed operator, trailing tokens after a complete expression, or empty input.
  """
  if isinstance(tokens, str):
    tokens = tokens.split()
  frames: list[tuple[str, int, list[int]]] = []  # (operator token, its position, argument values)
  result: int | None = None
  for pos, token in enumerate(tokens):
    if result is not None:
      raise ValueError(f"unexpected token {token!r} at position {pos}: the expression already ended at {pos - 1}")
    if token in _EVALUATORS:
      frames.append((token, pos, []))
      continue
    if token in _DIGIT_VALUES:
      value = _DIGIT_VALUES[token]
    elif token == _CLOSE:
      if not frames:
        raise ValueError(f"unmatched ']' at position {pos}")
      op, start, args = frames.pop()
      if not args:
        raise ValueError(f"operator {op!r} at position {start} has no arguments (closed at {pos})")
      value = _EVALUATORS[op](args)
    else:
      raise ValueError(f"unknown token {token!r} at position {pos}")
    if frames:
      frames[-1][2].append(value)
    else:
      result = value
  if frames:
    op, start, _ = frames[-1]
    raise ValueError(f"operator {op!r} at position {start} is never closed (input has {pos + 1} tokens)")
  if result is None:
    raise ValueError("empty expression: no tokens")
  return result


# -------------------------------------------------------------------------------------- tokenization
def tokenize(tokens: Sequence[str] | str) -> np.ndarray:
  """Token strings (or a whitespace-separated string) -> int32 ids. Unknown token -> ``ValueError``."""
  if isinstance(tokens, str):
    tokens = tokens.split()
  ids = []
  for pos, token in enumerate(tokens):
    try:
      ids.append(_TOKEN_TO_ID[token])
    except (KeyError, TypeError):
      raise ValueError(f"unknown token {token!r} at position {pos}; the vocabulary is {VOCAB}") from None
  return np.asarray(ids, dtype=np.int32)


def detokenize(ids: npt.ArrayLike) -> list[str]:
  """1-D ids -> token strings, dropping PAD and CLS. Out-of-vocabulary id -> ``ValueError``."""
  array = np.asarray(ids)
  if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
    raise ValueError(f"detokenize expects a 1-D integer array, got shape {array.shape} {array.dtype}")
  bad = (array < 0) | (array >= len(VOCAB))
  if bad.any():
    pos = int(np.argmax(bad))
    raise ValueError(f"id {int(array[pos])} at position {pos} is outside the vocabulary [0, {len(VOCAB)})")
  return [VOCAB[i] for i in array.tolist() if i != PAD_ID and i != CLS_ID]


# -------------------------------------------------------------------------------------------- splits
@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split; arrays are read-only (they may be shared through the cache of :func:`build_splits`)."""

  tokens: np.ndarray  # int32 [N, max_length + 1]: CLS, the expression, then PAD_ID
  lengths: np.ndarray  # int32 [N]: non-pad tokens including the CLS
  labels: np.ndarray  # int32 [N]

  def __len__(self) -> int:
    return int(self.labels.shape[0])


def _split_index(text: str) -> int:
  """Stable split of an expression's text (space-joined tokens): 0 train, 1 val, 2 test."""
  digest = hashlib.blake2b(text.encode("ascii"), digest_size=8, person=_HASH_PERSON).digest()
  bucket = int.from_bytes(digest, "little") % _NUM_BUCKETS
  for index, upper in enumerate(_BUCKET_UPPER):
    if bucket < upper:
      return index
  raise AssertionError("bucket out of range")


def _pack(sequences: list[list[int]], values: list[int], max_length: int) -> Split:
  count = len(sequences)
  lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=count)
  tokens = np.full((count, max_length + 1), PAD_ID, dtype=np.int32)
  tokens[:, 0] = CLS_ID
  total = int(lengths.sum())
  flat = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int32, count=total)
  rows = np.repeat(np.arange(count), lengths)
  starts = np.cumsum(lengths) - lengths
  cols = 1 + np.arange(total) - np.repeat(starts, lengths)
  tokens[rows, cols] = flat
  split = Split(
    tokens=tokens,
    lengths=(lengths + 1).astype(np.int32),
    labels=np.asarray(values, dtype=np.int32).reshape(count),
  )
  for array in (split.tokens, split.lengths, split.labels):
    array.setflags(write=False)
  return split


def _build_splits_uncached(cfg: ListOpsConfig) -> dict[str, Split]:
  wanted = (cfg.num_train, cfg.num_val, cfg.num_test)
  expected = max(n / f for n, f in zip(wanted, _BUCKET_FRACTION, strict=True))
  max_candidates = int(20 * expected) + 10_000
  sampler = _Sampler(cfg, np.random.default_rng([_STREAM_TAG, cfg.seed]))
  sequences: tuple[list[list[int]], ...] = ([], [], [])
  values: tuple[list[int], ...] = ([], [], [])
  seen: tuple[set[str], ...] = (set(), set(), set())
  missing = sum(wanted)
  for _ in range(max_candidates):
    if not missing:
      break
    ids, value = sampler.sample()
    text = " ".join([VOCAB[i] for i in ids])
    index = _split_index(text)
    if len(values[index]) == wanted[index] or text in seen[index]:
      continue
    seen[index].add(text)
    sequences[index].append(ids)
    values[index].append(value)
    missing -= 1
  else:
    if missing:
      got = ", ".join(f"{name}={len(v)}/{n}" for name, v, n in zip(_SPLIT_NAMES, values, wanted, strict=True))
      raise ValueError(
        f"ListOpsConfig: too few distinct expressions after {max_candidates} candidates ({got}); "
        f"expressions with max_depth={cfg.max_depth}, max_args={cfg.max_args} and lengths in "
        f"[{cfg.min_length}, {cfg.max_length}] are too few for num_train/num_val/num_test."
      )
  return {
    name: _pack(seqs, vals, cfg.max_length) for name, seqs, vals in zip(_SPLIT_NAMES, sequences, values, strict=True)
  }


@functools.lru_cache(maxsize=8)
def _build_splits_cached(cfg: ListOpsConfig) -> tuple[tuple[str, Split], ...]:
  return tuple(_build_splits_uncached(cfg).items())


def build_splits(cfg: ListOpsConfig) -> dict[str, Split]:
  """``{"train", "val", "test"}`` -> :class:`Split`, deterministic in `cfg`, disjoint, deduplicated.

  Cached in-process on the (frozen, hashable) config: repeated calls return the same read-only arrays
  in a fresh dict. ``_build_splits_cached.cache_clear()`` empties the cache.
  """
  if not isinstance(cfg, ListOpsConfig):
    raise ValueError(f"build_splits expects a ListOpsConfig, got {type(cfg).__name__}")
  return dict(_build_splits_cached(cfg))


def majority_baseline(splits: Mapping[str, Split]) -> tuple[int, float]:
  """Most frequent train label (ties -> smallest) and the accuracy of always predicting it on test."""
  train, test = splits["train"].labels, splits["test"].labels
  if train.size == 0 or test.size == 0:
    raise ValueError(f"majority_baseline needs non-empty train and test splits, got {train.size}, {test.size}")
  label = int(np.argmax(np.bincount(train, minlength=NUM_CLASSES)))
  return label, float(np.mean(test == label))


Config = ListOpsConfig


def build(cfg: ListOpsConfig):
  """The task-registry entry point (see research/data/tasks/base.py)."""
  from research.data.tasks.base import Task, length_stats

  splits = build_splits(cfg)
  _, baseline = majority_baseline(splits)
  arrays = {k: {"tokens": s.tokens, "lengths": s.lengths, "targets": s.labels} for k, s in splits.items()}
  card = {
    "source": "seeded generator (Nangia & Bowman 2018; LRA)",
    "classes": NUM_CLASSES,
    "sizes": {k: len(s) for k, s in splits.items()},
    "lengths": length_stats(splits["train"].lengths),
  }
  return Task("listops", "classify", arrays, len(VOCAB), cfg.max_length + 1, NUM_CLASSES, baseline, card)
