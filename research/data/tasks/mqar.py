"""Multi-query associative recall (MQAR), a seeded generator after Zoology's, adapted to an encoder.

Reference:
    S. Arora, S. Eyuboglu, A. Timalsina, I. Johnson, M. Poli, J. Zou, A. Rudra and C. Ré. "Zoology:
    Measuring and Improving Recall in Efficient Language Models." ICLR 2024. arXiv:2312.04927
    (generator: ``multiquery_ar`` in zoology/data/associative_recall.py).

Vocabulary. Ids 0-4 are the project's specials (0 = padding) and are never emitted. The ``vocab_size - 5``
task ids are split as in Zoology: keys are the first half, ``5 .. 5 + K - 1`` with ``K = (vocab_size - 5) // 2``,
values the rest, ``5 + K .. vocab_size - 1``.

Sequence (length ``seq_len``, no [CLS], no padding):

* kv section, positions ``0 .. 2 * num_kv - 1``: ``k_1 v_1 k_2 v_2 ...``; keys distinct and values distinct
  within a sequence (both drawn without replacement, as in Zoology);
* query section: ``(seq_len - 2 * num_kv) // 2`` slots at even offsets, slot ``s`` at position
  ``2 * num_kv + 2 * s``. ``Q = num_queries or num_kv`` distinct slots are drawn without replacement with probability
  proportional to ``(s + 1) ** (power_a - 1)`` (Zoology's power law: small gaps likely; ``placement="power"``)
  or uniformly (``placement="uniform"``); a random subset of Q of the pairs is queried, the i-th one's key
  written at the i-th drawn slot (Zoology queries every pair: ``num_queries=0``, the default, means num_kv);
* every other position is a filler drawn uniformly from all task ids 5 .. vocab_size - 1 (Zoology's
  ``random_non_queries``).

Encoder adaptation. Zoology is causal: the label of the query key's position is the NEXT token. Here every
token is an input and the target sits AT the query key's position: ``targets[n, t]`` is the value bound to
the key at ``t`` and ``weights[n, t] = 1`` at query positions, 0 elsewhere (targets 0 there). The value
itself never follows its query (the next token is a filler), so the answer must be recalled from the kv
section.

Splits. One seeded stream of candidate sequences, generated in chunks of 1024 rows; a sequence's split is a
function of its tokens alone (a personalised BLAKE2b hash picks one of 1000 buckets: 80% "train", 10% "val",
10% "test", as in listops.py); each split keeps its first ``num_*`` new sequences, duplicates skipped.
Baseline: the test accuracy (over query positions) of always answering the most frequent train value,
about ``1 / (vocab_size - 5 - K)``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time

import numpy as np

from research.data.tasks.base import SPLITS, Task, length_stats

FIRST_ID = 5  # ids below are the project's specials
PLACEMENTS = ("power", "uniform")

_NUM_BUCKETS = 1000
_BUCKET_UPPER = (800, 900, 1000)
_BUCKET_FRACTION = (0.8, 0.1, 0.1)
_HASH_PERSON = b"zoology-mqar-1"
_STREAM_TAG = 0x4D51_4152  # "MQAR"
_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int = 256
  seq_len: int = 128
  num_kv: int = 16
  num_queries: int = 0  # 0: query every pair (Zoology); else 1..num_kv
  placement: str = "power"
  power_a: float = 0.01
  num_train: int = 2000
  num_val: int = 200
  num_test: int = 200
  seed: int = 0

  def __post_init__(self):
    for name in ("vocab_size", "seq_len", "num_kv", "num_queries", "num_train", "num_val", "num_test", "seed"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"mqar Config.{name}={value!r}; expected an integer")
      object.__setattr__(self, name, int(value))
    for name, low in (
      ("num_kv", 1),
      ("num_queries", 0),
      ("num_train", 1),
      ("num_val", 0),
      ("num_test", 0),
      ("seed", 0),
    ):
      if getattr(self, name) < low:
        raise ValueError(f"mqar Config.{name}={getattr(self, name)}; expected an integer >= {low}")
    if self.vocab_size < FIRST_ID + 2 * self.num_kv + 1:
      raise ValueError(
        f"mqar Config.vocab_size={self.vocab_size}; expected >= {FIRST_ID + 2 * self.num_kv + 1} "
        f"(ids 0-4 reserved, then num_kv={self.num_kv} distinct keys and values)"
      )
    if self.num_queries > self.num_kv:
      raise ValueError(f"mqar Config.num_queries={self.num_queries}; expected <= num_kv={self.num_kv}")
    if self.seq_len < 2 * self.num_kv + 2 * self.queries:
      raise ValueError(
        f"mqar Config.seq_len={self.seq_len}; expected >= 2 * num_kv + 2 * (num_queries or num_kv)"
        f" = {2 * self.num_kv + 2 * self.queries}"
      )
    if self.placement not in PLACEMENTS:
      raise ValueError(f"mqar Config.placement={self.placement!r}; expected one of {', '.join(PLACEMENTS)}")
    if isinstance(self.power_a, bool) or not isinstance(self.power_a, int | float) or not 0 < self.power_a < 1e3:
      raise ValueError(f"mqar Config.power_a={self.power_a!r}; expected a float in (0, 1000)")
    object.__setattr__(self, "power_a", float(self.power_a))

  @property
  def queries(self) -> int:
    """Queries per sequence."""
    return self.num_queries or self.num_kv

  @property
  def num_keys(self) -> int:
    return (self.vocab_size - FIRST_ID) // 2


def _without_replacement(rng: np.random.Generator, logits: np.ndarray, rows: int, k: int) -> np.ndarray:
  """[rows, k] distinct indices into `logits`, drawn one after another with p ∝ exp(logits) (Gumbel top-k)."""
  scores = logits + rng.gumbel(size=(rows, len(logits)))
  top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # the k largest scores, unordered
  order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
  return np.take_along_axis(top, order, 1)


def _chunk(rng: np.random.Generator, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
  """tokens int32 [_CHUNK, seq_len] and targets int32 [_CHUNK, seq_len] (0 off the query positions)."""
  n, q, rows = cfg.num_kv, cfg.queries, _CHUNK
  num_keys = cfg.num_keys
  num_values = cfg.vocab_size - FIRST_ID - num_keys
  keys = FIRST_ID + _without_replacement(rng, np.zeros(num_keys), rows, n)
  values = FIRST_ID + num_keys + _without_replacement(rng, np.zeros(num_values), rows, n)
  tokens = rng.integers(FIRST_ID, cfg.vocab_size, size=(rows, cfg.seq_len)).astype(np.int32)
  tokens[:, 0 : 2 * n : 2] = keys
  tokens[:, 1 : 2 * n : 2] = values
  space = (cfg.seq_len - 2 * n) // 2
  gaps = np.arange(1, space + 1, dtype=np.float64)
  logits = (cfg.power_a - 1) * np.log(gaps) if cfg.placement == "power" else np.zeros(space)
  slots = _without_replacement(rng, logits, rows, q)
  pairs = _without_replacement(rng, np.zeros(n), rows, q)  # which kv pairs are queried, in slot order
  positions = 2 * n + 2 * slots
  row = np.arange(rows)[:, None]
  tokens[row, positions] = np.take_along_axis(keys, pairs, 1)
  targets = np.zeros_like(tokens)
  targets[row, positions] = np.take_along_axis(values, pairs, 1)
  return tokens, targets


def _split_index(row: np.ndarray) -> int:
  digest = hashlib.blake2b(row.tobytes(), digest_size=8, person=_HASH_PERSON).digest()
  bucket = int.from_bytes(digest, "little") % _NUM_BUCKETS
  return next(i for i, upper in enumerate(_BUCKET_UPPER) if bucket < upper)


def _generate(cfg: Config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  wanted = (cfg.num_train, cfg.num_val, cfg.num_test)
  expected = max(n / f for n, f in zip(wanted, _BUCKET_FRACTION, strict=True))
  max_chunks = int(4 * expected) // _CHUNK + 4
  rng = np.random.default_rng([_STREAM_TAG, cfg.seed])
  kept: tuple[list[int], ...] = ([], [], [])
  parts: tuple[list[tuple[np.ndarray, np.ndarray]], ...] = ([], [], [])
  seen: set[bytes] = set()
  for _ in range(max_chunks):
    tokens, targets = _chunk(rng, cfg)
    rows: tuple[list[int], ...] = ([], [], [])
    for i, row in enumerate(tokens):
      index = _split_index(row)
      key = row.tobytes()
      if len(kept[index]) + len(rows[index]) == wanted[index] or key in seen:
        continue
      seen.add(key)
      rows[index].append(i)
    for index, picked in enumerate(rows):
      kept[index].extend(picked)
      parts[index].append((tokens[picked], targets[picked]))
    if all(len(k) == w for k, w in zip(kept, wanted, strict=True)):
      break
  else:
    raise ValueError(f"mqar: too few distinct sequences after {max_chunks * _CHUNK} candidates for {cfg}")
  return {
    name: (np.concatenate([t for t, _ in p]), np.concatenate([y for _, y in p]))
    for name, p in zip(SPLITS, parts, strict=True)
  }


@functools.lru_cache(maxsize=8)
def build(cfg: Config) -> Task:
  """The MQAR task for `cfg` (memoised; arrays read-only)."""
  start = time.perf_counter()
  splits = {}
  for name, (tokens, targets) in _generate(cfg).items():
    arrays = {
      "tokens": tokens,
      "lengths": np.full(len(tokens), cfg.seq_len, np.int32),
      "targets": targets,
      "weights": (targets > 0).astype(np.float32),
    }
    for a in arrays.values():
      a.setflags(write=False)
    splits[name] = arrays
  train, test = splits["train"], splits["test"]
  answers = train["targets"][train["weights"] > 0]
  most_frequent = int(np.bincount(answers).argmax())
  test_answers = test["targets"][test["weights"] > 0]
  baseline = float(np.mean(test_answers == most_frequent)) if test_answers.size else 0.0
  # distance from each query to its key in the kv section, over train
  query_rows, query_cols = np.nonzero(train["weights"])
  key_cols = (
    np.argmax(
      train["tokens"][query_rows, : 2 * cfg.num_kv : 2] == train["tokens"][query_rows, query_cols][:, None], axis=1
    )
    * 2
  )
  num_keys = cfg.num_keys
  card = {
    "source": "seeded generator after Zoology's multiquery_ar (Arora et al. 2023, arXiv:2312.04927)",
    "vocabulary": {
      "keys": [FIRST_ID, FIRST_ID + num_keys - 1],
      "values": [FIRST_ID + num_keys, cfg.vocab_size - 1],
      "fillers": [FIRST_ID, cfg.vocab_size - 1],
    },
    "sizes": {name: int(len(s["tokens"])) for name, s in splits.items()},
    "num_kv": cfg.num_kv,
    "queries_per_sequence": cfg.queries,
    "placement": cfg.placement if cfg.placement == "uniform" else f"power (a={cfg.power_a})",
    "lengths": length_stats(train["lengths"]),
    "query_to_key_distance_train": length_stats(query_cols - key_cols),
    "baseline": f"test accuracy of always answering the most frequent train value ({most_frequent})",
    "build_seconds": round(time.perf_counter() - start, 3),
  }
  return Task("mqar", "tokens", splits, cfg.vocab_size, cfg.seq_len, cfg.vocab_size, baseline, card)
