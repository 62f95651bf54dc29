"""Pathfinder (the LRA long-range spatial task): a seeded procedural generator with flood-fill-checked labels.

References:
    D. Linsley, J. Kim, V. Veerabadran, C. Windolf and T. Serre. "Learning long-range spatial dependencies
    with horizontal gated recurrent units." NeurIPS 2018. arXiv:1805.08315 (Pathfinder-6/9/14).
    Y. Tay et al. "Long Range Arena: A Benchmark for Efficient Transformers." ICLR 2021. arXiv:2011.04006.

Image. A ``size`` x ``size`` grid of levels 0 (background), 1 (path), 2 (endpoint marker). Every path is a
chain of ``strokes`` straight strokes of ``stroke_px(size)`` pixels (3 at size 32); the heading turns by
U(-45°, +45°) between strokes (Pathfinder's bounded contour curvature). Strokes are drawn with Bresenham's
line and the chain is thinned, so each path is SOLID and SIMPLE: consecutive pixels are 8-adjacent and no
other two of its pixels are 8-adjacent (exactly two ends of degree 1, every other pixel of degree 2).
Different paths never touch, not even diagonally (Chebyshev distance >= 2 between them). A path is grown
stroke by stroke as a self-avoiding walk (depth-first: a turn that leaves the grid or touches ink is redrawn,
after _TURN_TRIES failures the previous stroke is redrawn); a path that cannot be completed is restarted
elsewhere, an image whose paths cannot all be placed is restarted.

Classes. Every image has ``2 + distractors`` paths with the same stroke count and exactly two marked pixels,
both at path ends, so the number and length of paths and the number of unmarked path ends carry no label:

* label 1: both ends of the first path drawn are marked;
* label 0: two ends of two different paths are marked, the pair (among all ends of all paths) whose distance
  is closest to the first path's end-to-end distance, so that the distance between the markers has about
  the same distribution in both classes (the card reports its mean per class).

Difficulty = (strokes per path, distractor paths): "easy" (6, 3), "medium" (9, 2), "hard" (14, 1), after
Pathfinder-6/9/14 (contour length in paddles). Total strokes per image (30, 36, 42) stay comparable, so the
clutter is similar while the paths to follow get longer. Smallest grid: 16 ("easy"), 20 ("medium", "hard").

Verification. Every image is labelled by construction and then re-labelled by a flood fill over ink pixels
(8-connectivity) from one marker: label 1 iff the other marker is reached. An image whose two labels
disagree is discarded (counted in the card; the non-touching construction makes this 0 in practice).

Sequence. Token = 5 + level (ids 5, 6, 7; ids 0-4 are the project's specials, 0 = padding), the image
flattened row-major, prefixed by [CLS] (id 2): ``seq_len = size * size + 1``, ``vocab_size = 8``.

Splits. One seeded stream of candidates with alternating labels (1, 0, 1, ...). A candidate's split is a
function of its image alone: a personalised BLAKE2b hash of the level bytes picks one of 1000 buckets,
80% "train", 10% "val", 10% "test" (as in listops.py). Each split keeps new images until it holds
``n - n // 2`` of label 0 and ``n // 2`` of label 1, skipping duplicates, so splits are disjoint and balanced.
:func:`build` is memoised per config (arrays read-only); the default config (2,400 images of 32 x 32) takes
about 2.5 s on one core, "medium" about 4 s, "hard" about 5-7 s.
"""

from __future__ import annotations

import array
import dataclasses
import functools
import hashlib
import math
import time

import numpy as np

from research.data.tasks.base import SPLITS, Task, length_stats, majority
from research.data.tokenizer import CLS

DIFFICULTIES = {"easy": (6, 3), "medium": (9, 2), "hard": (14, 1)}  # (strokes per path, distractor paths)
MIN_SIZE = {"easy": 16, "medium": 20, "hard": 20}  # smaller grids cannot hold the paths apart (or only slowly)
BACKGROUND, PATH, MARKER = 0, 1, 2
TOKEN_OFFSET = 5  # token = TOKEN_OFFSET + level
VOCAB_SIZE = TOKEN_OFFSET + 3
MAX_TURN = math.pi / 4

_NUM_BUCKETS = 1000
_BUCKET_UPPER = (800, 900, 1000)
_BUCKET_FRACTION = (0.8, 0.1, 0.1)
_HASH_PERSON = b"lra-pathfinder-1"
_STREAM_TAG = 0x5061_7468  # "Path": this stream differs from other tasks' streams under the same seed
_PATH_TRIES = 20  # redraws of one path before the image is restarted
_IMAGE_TRIES = 300  # restarts of one image before the config is declared infeasible
_TURN_TRIES = 6  # redraws of one stroke's turn before backtracking to the previous stroke
_STEP_BUDGET = 8  # stroke trials per stroke of a path before the path is abandoned
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@dataclasses.dataclass(frozen=True)
class Config:
  size: int = 32
  difficulty: str = "easy"
  num_train: int = 2000
  num_val: int = 200
  num_test: int = 200
  seed: int = 0

  def __post_init__(self):
    for name in ("size", "num_train", "num_val", "num_test", "seed"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"pathfinder Config.{name}={value!r}; expected an integer")
      object.__setattr__(self, name, int(value))
    if self.difficulty not in DIFFICULTIES:
      raise ValueError(f"pathfinder Config.difficulty={self.difficulty!r}; expected one of {', '.join(DIFFICULTIES)}")
    if not MIN_SIZE[self.difficulty] <= self.size <= 256:
      raise ValueError(
        f"pathfinder Config.size={self.size}; expected an integer in [{MIN_SIZE[self.difficulty]}, "
        f"256] for difficulty={self.difficulty!r}"
      )
    for name, low in (("num_train", 2), ("num_val", 0), ("num_test", 0), ("seed", 0)):
      if getattr(self, name) < low:
        raise ValueError(f"pathfinder Config.{name}={getattr(self, name)}; expected an integer >= {low}")


def stroke_px(size: int) -> int:
  """Pixels per stroke: 3 at size 32, scaled with the grid."""
  return max(2, round(3 * size / 32))


# ------------------------------------------------------------------------------------------------ drawing
# Pixels are flat indices p = (row + 1) * width + (col + 1) into a (size + 2)^2 grid with a one-pixel frame, so
# the 8 neighbours of any on-grid pixel are p + o for o in _offsets(width) (no wrap-around, no bounds checks).
def _offsets(width: int) -> tuple[int, ...]:
  return tuple(dy * width + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def _line(y0: int, x0: int, y1: int, x1: int, width: int) -> list[int]:
  """Bresenham's line from (y0, x0) to (y1, x1), start excluded, as flat pixels; each step is 8-adjacent."""
  dy, dx = abs(y1 - y0), abs(x1 - x0)
  sy, sx = (1 if y1 > y0 else -1), (1 if x1 > x0 else -1)
  err = dx - dy
  out = []
  while y0 != y1 or x0 != x1:
    e2 = 2 * err
    if e2 > -dy:
      err -= dy
      x0 += sx
    if e2 < dx:
      err += dx
      y0 += sy
    out.append((y0 + 1) * width + x0 + 1)
  return out


class _Uniforms:
  """U[0, 1) floats from a numpy Generator, drawn a chunk at a time (Python-speed scalar access)."""

  def __init__(self, rng: np.random.Generator, chunk: int = 4096):
    self.rng, self.chunk, self.buffer = rng, chunk, []

  def __call__(self) -> float:
    if not self.buffer:
      self.buffer = self.rng.random(self.chunk).tolist()[::-1]
    return self.buffer.pop()


def _extend(chain: list[int], own: array.array, pixels: list[int], offsets: tuple[int, ...]) -> bool:
  """Appends `pixels` (each 8-adjacent to the previous) to `chain`, thinning corners; False if the path would
  touch itself. `own[p]` is 1 + the position of pixel p in `chain` (0: not on the path)."""
  adjacent = frozenset(offsets)
  for q in pixels:
    while len(chain) >= 2 and q - chain[-2] in adjacent:
      own[chain.pop()] = 0  # thinning: drop a corner pixel whose neighbours are already 8-adjacent
    last = len(chain)  # own value of chain[-1], the only path pixel q may touch
    for o in offsets:
      j = own[q + o]
      if j and j < last:
        return False
    chain.append(q)
    own[q] = len(chain)
  return True


def _draw_path(uniform: _Uniforms, size: int, strokes: int, blocked: bytearray) -> list[int] | None:
  """One simple 8-connected path (flat pixels) clear of `blocked`, grown stroke by stroke, or None.

  A self-avoiding walk with bounded curvature, by depth-first search: a stroke's turn is redrawn until the
  stroke stays on the grid and clear of other paths and of the path itself; after _TURN_TRIES failures the
  previous stroke is redrawn; after _STEP_BUDGET * strokes trials the path is abandoned.
  """
  width = size + 2
  offsets = _offsets(width)
  y, x = round(uniform() * (size - 1)), round(uniform() * (size - 1))
  start = (y + 1) * width + x + 1
  if blocked[start]:
    return None
  own = array.array("H", bytes(2 * width * width))
  own[start] = 1
  step = stroke_px(size)
  stack = [([start], own, float(y), float(x), uniform() * 2 * math.pi)]
  fails = [0]
  for _ in range(_STEP_BUDGET * strokes):
    chain, own, y, x, heading = stack[-1]
    turned = heading + (2 * uniform() - 1) * MAX_TURN
    ny, nx = y + step * math.sin(turned), x + step * math.cos(turned)
    if -0.5 < ny < size - 0.5 and -0.5 < nx < size - 0.5:
      last = chain[-1]
      pixels = _line(last // width - 1, last % width - 1, round(ny), round(nx), width)
      if not any(blocked[p] for p in pixels):
        trial, trial_own = chain.copy(), own[:]  # only for strokes clear of other paths
        if _extend(trial, trial_own, pixels, offsets):
          if len(stack) == strokes:
            return trial
          stack.append((trial, trial_own, ny, nx, turned))
          fails.append(0)
          continue
    fails[-1] += 1
    if fails[-1] >= _TURN_TRIES:
      stack.pop()
      fails.pop()
      if not stack:
        return None
  return None


def _markers(paths: list[list[int]], label: int, width: int) -> list[int]:
  """The two marked pixels: both ends of the first path (label 1), or the ends of two different paths whose
  distance is closest to the first path's end-to-end distance (label 0), so that marker distance is no cue."""
  first = paths[0]
  if label:
    return [first[0], first[-1]]

  def distance(p: int, q: int) -> float:
    return math.hypot(p // width - q // width, p % width - q % width)

  target = distance(first[0], first[-1])
  ends = [(i, p) for i, path in enumerate(paths) for p in (path[0], path[-1])]
  pairs = [(abs(distance(p, q) - target), p, q) for k, (i, p) in enumerate(ends) for j, q in ends[k + 1 :] if i != j]
  _, p, q = min(pairs)
  return [p, q]


def _image(uniform: _Uniforms, size: int, strokes: int, distractors: int, label: int) -> np.ndarray:
  """Levels uint8 [size, size] of one image with the given construction label."""
  width = size + 2
  offsets = _offsets(width)
  for _ in range(_IMAGE_TRIES):
    blocked = bytearray(width * width)  # ink dilated by one pixel
    paths = []
    for _ in range(2 + distractors):
      for _ in range(_PATH_TRIES):
        path = _draw_path(uniform, size, strokes, blocked)
        if path is not None:
          break
      else:
        break
      paths.append(path)
      for p in path:
        for o in offsets:
          blocked[p + o] = 1
    if len(paths) < 2 + distractors:
      continue
    levels = np.zeros((width, width), np.uint8)
    for path in paths:
      levels.reshape(-1)[path] = PATH
    levels.reshape(-1)[_markers(paths, label, width)] = MARKER
    return levels[1:-1, 1:-1].copy()
  raise ValueError(
    f"pathfinder: cannot place {2 + distractors} paths of {strokes} strokes of {stroke_px(size)} "
    f"pixels on a {size}x{size} grid without touching ({_IMAGE_TRIES} tries); use a larger size"
  )


# ------------------------------------------------------------------------------------------- verification
def flood_fill_labels(levels: np.ndarray) -> np.ndarray:
  """int [N]: 1 iff the two MARKER pixels of each image [N, S, S] are 8-connected through ink (levels > 0).

  Iterated masked dilation from the first marker (row-major) until nothing changes.
  """
  levels = np.asarray(levels)
  n, s, _ = levels.shape
  ink = np.zeros((n, s + 2, s + 2), bool)
  ink[:, 1:-1, 1:-1] = levels > 0
  markers = np.zeros_like(ink)
  markers[:, 1:-1, 1:-1] = levels == MARKER
  if not (markers.reshape(n, -1).sum(1) == 2).all():
    raise ValueError("flood_fill_labels: every image needs exactly two marker pixels")
  first = markers.reshape(n, -1).argmax(1)
  reach = np.zeros_like(ink)
  reach.reshape(n, -1)[np.arange(n), first] = True
  while True:
    grown = reach.copy()
    for dy, dx in _NEIGHBOURS:
      grown[:, 1:-1, 1:-1] |= reach[:, 1 + dy : s + 1 + dy, 1 + dx : s + 1 + dx]
    grown &= ink
    if (grown == reach).all():
      break
    reach = grown
  return ((reach & markers).reshape(n, -1).sum(1) == 2).astype(np.int32)


# --------------------------------------------------------------------------------------------------- splits
def _split_index(image: np.ndarray) -> int:
  digest = hashlib.blake2b(image.tobytes(), digest_size=8, person=_HASH_PERSON).digest()
  bucket = int.from_bytes(digest, "little") % _NUM_BUCKETS
  return next(i for i, upper in enumerate(_BUCKET_UPPER) if bucket < upper)


def _generate(cfg: Config) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int, int]:
  """{split: (levels [N, S, S] uint8, labels [N])}, candidates drawn, candidates rejected by the flood fill."""
  strokes, distractors = DIFFICULTIES[cfg.difficulty]
  wanted = (cfg.num_train, cfg.num_val, cfg.num_test)
  quota = [[n - n // 2, n // 2] for n in wanted]  # [split][label]
  expected = max(n / f for n, f in zip(wanted, _BUCKET_FRACTION, strict=True))
  max_candidates = int(4 * expected) + 1000
  uniform = _Uniforms(np.random.default_rng([_STREAM_TAG, cfg.seed, cfg.size, strokes, distractors]))
  images: tuple[list[np.ndarray], ...] = ([], [], [])
  labels: tuple[list[int], ...] = ([], [], [])
  seen: set[bytes] = set()
  drawn = rejected = 0
  while sum(map(sum, quota)):
    if drawn >= max_candidates:
      raise ValueError(f"pathfinder: too few distinct images after {drawn} candidates for {cfg}")
    batch = [
      (_image(uniform, cfg.size, strokes, distractors, (drawn + i + 1) % 2), (drawn + i + 1) % 2) for i in range(64)
    ]
    drawn += len(batch)
    verified = flood_fill_labels(np.stack([im for im, _ in batch]))
    for (image, label), check in zip(batch, verified, strict=True):
      if check != label:
        rejected += 1
        continue
      key = image.tobytes()
      index = _split_index(image)
      if quota[index][label] == 0 or key in seen:
        continue
      seen.add(key)
      quota[index][label] -= 1
      images[index].append(image)
      labels[index].append(label)
  out = {
    name: (np.stack(ims) if ims else np.zeros((0, cfg.size, cfg.size), np.uint8), np.asarray(lab, np.int32))
    for name, ims, lab in zip(SPLITS, images, labels, strict=True)
  }
  return out, drawn, rejected


def _endpoint_distance(levels: np.ndarray) -> np.ndarray:
  """Euclidean distance between the two markers of each image (a card fact: a possible shortcut)."""
  n = len(levels)
  flat = np.nonzero(levels.reshape(n, -1) == MARKER)[1].reshape(n, 2)
  ys, xs = flat // levels.shape[-1], flat % levels.shape[-1]
  return np.hypot(ys[:, 0] - ys[:, 1], xs[:, 0] - xs[:, 1])


@functools.lru_cache(maxsize=8)
def build(cfg: Config) -> Task:
  """The Pathfinder task for `cfg` (memoised; arrays read-only)."""
  start = time.perf_counter()
  generated, drawn, rejected = _generate(cfg)
  seq_len = cfg.size * cfg.size + 1
  splits = {}
  for name, (levels, labels) in generated.items():
    n = len(labels)
    tokens = np.empty((n, seq_len), np.int32)
    tokens[:, 0] = CLS
    tokens[:, 1:] = TOKEN_OFFSET + levels.reshape(n, -1).astype(np.int32)
    arrays = {"tokens": tokens, "lengths": np.full(n, seq_len, np.int32), "targets": labels}
    for a in arrays.values():
      a.setflags(write=False)
    splits[name] = arrays
  strokes, distractors = DIFFICULTIES[cfg.difficulty]
  test_targets = splits["test"]["targets"]
  baseline = majority(test_targets) if len(test_targets) else 0.5
  train_levels, train_labels = generated["train"]
  distance = _endpoint_distance(train_levels)
  ink = (train_levels > 0).reshape(len(train_levels), -1).sum(1)
  card = {
    "source": "seeded procedural generator (Linsley et al. 2018 Pathfinder; LRA, Tay et al. 2021)",
    "image": f"{cfg.size}x{cfg.size}, levels background/path/marker -> tokens 5/6/7, row-major after [CLS]",
    "difficulty": {
      "name": cfg.difficulty,
      "strokes_per_path": strokes,
      "stroke_px": stroke_px(cfg.size),
      "distractor_paths": distractors,
    },
    "sizes": {name: int(len(s["targets"])) for name, s in splits.items()},
    "classes": {"0": "markers on different paths", "1": "markers on one path"},  # balance: fraction of 1
    "balance": {name: float(np.mean(s["targets"])) if len(s["targets"]) else 0.0 for name, s in splits.items()},
    "lengths": length_stats(splits["train"]["lengths"]),
    "ink_pixels_train": length_stats(ink),
    "marker_distance_train": {str(k): float(distance[train_labels == k].mean()) for k in (0, 1)},
    "candidates_drawn": drawn,
    "rejected_by_flood_fill": rejected,
    "baseline": "majority class accuracy on test",
    "build_seconds": round(time.perf_counter() - start, 3),
  }
  return Task("pathfinder", "classify", splits, VOCAB_SIZE, seq_len, 2, baseline, card)
