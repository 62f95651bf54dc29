"""The Pathfinder generator (research/data/tasks/pathfinder.py), every label re-checked by scipy's flood fill."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from research.data import tasks
from research.data.tasks import pathfinder
from tests.data.helpers import assert_same_splits

CFG = pathfinder.Config(num_train=240, num_val=61, num_test=40, seed=3)
EIGHT = np.ones((3, 3), bool)  # 8-connectivity


@pytest.fixture(scope="module")
def task():
  return pathfinder.build(CFG)


def images(split: dict) -> np.ndarray:
  """Levels [N, S, S] back from the token rows (after [CLS])."""
  n, length = split["tokens"].shape
  size = int(round((length - 1) ** 0.5))
  return split["tokens"][:, 1:].reshape(n, size, size) - pathfinder.TOKEN_OFFSET


def scipy_labels(levels: np.ndarray) -> np.ndarray:
  """1 iff the two marker pixels share an 8-connected component of ink (independent of the module)."""
  out = []
  for image in levels:
    components, _ = ndimage.label(image > 0, structure=EIGHT)
    (y0, y1), (x0, x1) = np.nonzero(image == pathfinder.MARKER)
    out.append(int(components[y0, x0] == components[y1, x1]))
  return np.asarray(out)


def degrees(ink: np.ndarray) -> np.ndarray:
  """Number of 8-neighbours in `ink` of every ink pixel (0 off ink), for a stack [N, S, S]."""
  padded = np.pad(ink, ((0, 0), (1, 1), (1, 1))).astype(np.int32)
  size = ink.shape[-1]
  total = sum(
    padded[:, 1 + dy : size + 1 + dy, 1 + dx : size + 1 + dx]
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
  )
  return np.where(ink, total, 0)


def check_paths(levels: np.ndarray, num_paths: int) -> np.ndarray:
  """Asserts every ink component is a solid simple 8-connected path with markers only at its ends.

  A component with n pixels, n - 1 adjacency edges and no pixel of degree > 2 is a simple path. Returns the
  pixel counts of all paths.
  """
  deg = degrees(levels > 0)
  sizes = []
  for image, d in zip(levels, deg, strict=True):
    components, count = ndimage.label(image > 0, structure=EIGHT)
    assert count == num_paths
    pixels = np.bincount(components.ravel(), minlength=count + 1)[1:]
    edges = np.bincount(components.ravel(), weights=d.ravel(), minlength=count + 1)[1:] / 2
    np.testing.assert_array_equal(edges, pixels - 1)
    assert d.max() <= 2
    assert (pixels >= 3).all()
    marked = image == pathfinder.MARKER
    assert marked.sum() == 2 and (d[marked] == 1).all()  # markers are path ends
    sizes.append(pixels)
  return np.concatenate(sizes)


def test_shapes_dtypes_and_tokens(task):
  size = CFG.size
  assert (task.name, task.kind, task.num_classes) == ("pathfinder", "classify", 2)
  assert (task.vocab_size, task.seq_len) == (8, size * size + 1)
  for name, n in (("train", 240), ("val", 61), ("test", 40)):
    split = task.splits[name]
    assert split["tokens"].shape == (n, size * size + 1) and split["tokens"].dtype == np.int32
    assert split["lengths"].dtype == np.int32 and (split["lengths"] == size * size + 1).all()
    assert split["targets"].shape == (n,) and split["targets"].dtype == np.int32
    assert (split["tokens"][:, 0] == 2).all()  # [CLS]
    assert set(np.unique(split["tokens"][:, 1:])) == {5, 6, 7}
    assert all(not a.flags.writeable for a in split.values())


def test_every_label_matches_an_independent_flood_fill(task):
  for split in task.splits.values():
    np.testing.assert_array_equal(scipy_labels(images(split)), split["targets"])
  assert task.card["rejected_by_flood_fill"] == 0


def test_module_flood_fill_on_hand_made_images():
  image = np.zeros((3, 6, 6), np.uint8)
  image[0, [0, 1, 2, 3], [0, 1, 2, 3]] = 1  # diagonal chain: connected under 8-connectivity
  image[0, 0, 0] = image[0, 3, 3] = 2
  image[1] = image[0]
  image[1, 2, 2] = 0  # one pixel removed: broken
  image[2, 0, :] = 1  # a U: connected the long way round
  image[2, :, 5] = 1
  image[2, 5, :] = 1
  image[2, 0, 0] = image[2, 5, 0] = 2
  np.testing.assert_array_equal(pathfinder.flood_fill_labels(image), [1, 0, 1])
  np.testing.assert_array_equal(scipy_labels(image), [1, 0, 1])


def test_balanced_classes(task):
  for name, n in (("train", 240), ("val", 61), ("test", 40)):
    assert np.bincount(task.splits[name]["targets"]).tolist() == [n - n // 2, n // 2]
  assert task.baseline == 0.5


def test_paths_are_solid_simple_and_apart(task):
  strokes, distractors = pathfinder.DIFFICULTIES["easy"]
  for split in task.splits.values():
    check_paths(images(split), 2 + distractors)


def test_difficulty_sets_path_length_and_count():
  mean_pixels = []
  for difficulty in ("easy", "medium", "hard"):
    t = pathfinder.build(pathfinder.Config(difficulty=difficulty, num_train=40, num_val=4, num_test=4, seed=1))
    strokes, distractors = pathfinder.DIFFICULTIES[difficulty]
    levels = images(t.splits["train"])
    pixels = check_paths(levels, 2 + distractors)
    step = pathfinder.stroke_px(32)
    assert (pixels <= strokes * step + 1).all()  # each stroke adds at most `step` pixels
    np.testing.assert_array_equal(scipy_labels(levels), t.splits["train"]["targets"])
    mean_pixels.append(pixels.mean())
  assert mean_pixels[0] < mean_pixels[1] < mean_pixels[2]


def test_deterministic_by_seed(task):
  again = pathfinder.build.__wrapped__(dataclasses.replace(CFG))  # bypass the cache: really regenerate
  assert_same_splits(task, again)
  other = pathfinder.build(dataclasses.replace(CFG, seed=4))
  assert not np.array_equal(other.splits["train"]["tokens"], task.splits["train"]["tokens"])


def test_splits_disjoint_and_deduplicated(task):
  rows = {name: {r.tobytes() for r in split["tokens"]} for name, split in task.splits.items()}
  for name, split in task.splits.items():
    assert len(rows[name]) == len(split["tokens"])
  assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_disagreeing_images_are_rejected(monkeypatch):
  """Every 5th candidate drawn with the wrong construction label is caught by the flood fill and dropped."""
  calls = []
  draw = pathfinder._image

  def lying(uniform, size, strokes, distractors, label):
    calls.append(label)
    return draw(uniform, size, strokes, distractors, 1 - label if len(calls) % 5 == 0 else label)

  monkeypatch.setattr(pathfinder, "_image", lying)
  cfg = pathfinder.Config(num_train=30, num_val=4, num_test=4, seed=5)
  t = pathfinder.build.__wrapped__(cfg)
  assert t.card["rejected_by_flood_fill"] == t.card["candidates_drawn"] // 5 > 0
  for split in t.splits.values():
    np.testing.assert_array_equal(scipy_labels(images(split)), split["targets"])


def test_registry_builds_the_same_task(task):
  via = tasks.build("pathfinder", {"num_train": 240, "num_val": 61, "num_test": 40, "seed": 3})
  np.testing.assert_array_equal(via.splits["test"]["tokens"], task.splits["test"]["tokens"])


def test_card_facts(task):
  card = task.card
  assert card["sizes"] == {"train": 240, "val": 61, "test": 40}
  assert card["difficulty"] == {"name": "easy", "strokes_per_path": 6, "stroke_px": 3, "distractor_paths": 3}
  assert card["lengths"]["max"] == 1025
  ink = (images(task.splits["train"]) > 0).sum((1, 2))
  assert card["ink_pixels_train"]["mean"] == pytest.approx(ink.mean())


def test_size_floor_depends_on_difficulty():
  with pytest.raises(ValueError, match=r"Config.size=16; expected an integer in \[20, 256\] for difficulty='hard'"):
    pathfinder.Config(size=16, difficulty="hard")
  small = pathfinder.build(pathfinder.Config(size=16, num_train=16, num_val=2, num_test=2))
  assert small.seq_len == 257
  check_paths(images(small.splits["train"]), 2 + pathfinder.DIFFICULTIES["easy"][1])
  np.testing.assert_array_equal(scipy_labels(images(small.splits["train"])), small.splits["train"]["targets"])


@pytest.mark.parametrize(
  ("field", "value", "match"),
  [
    ("size", 8, r"Config.size=8; expected an integer in \[16, 256\] for difficulty='easy'"),
    ("size", 300, r"Config.size=300; expected an integer in \[16, 256\]"),
    ("size", "32", r"Config.size='32'; expected an integer"),
    ("difficulty", "extreme", r"Config.difficulty='extreme'; expected one of easy, medium, hard"),
    ("num_train", 1, r"Config.num_train=1; expected an integer >= 2"),
    ("num_val", -1, r"Config.num_val=-1; expected an integer >= 0"),
    ("seed", True, r"Config.seed=True; expected an integer"),
  ],
)
def test_config_errors_name_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    pathfinder.Config(**{field: value})


def test_marker_distance_is_no_cue():
  """Label-0 markers are chosen to match the label-1 end-to-end distance (unmatched, medium differs by ~4 px)."""
  t = pathfinder.build(pathfinder.Config(difficulty="medium", num_train=300, num_val=2, num_test=2, seed=2))
  levels, labels = images(t.splits["train"]), t.splits["train"]["targets"]
  distance = []
  for image in levels:
    (y0, y1), (x0, x1) = np.nonzero(image == pathfinder.MARKER)
    distance.append(np.hypot(y0 - y1, x0 - x1))
  distance = np.asarray(distance)
  assert abs(distance[labels == 0].mean() - distance[labels == 1].mean()) < 1.5
  assert t.card["marker_distance_train"]["0"] == pytest.approx(distance[labels == 0].mean())
