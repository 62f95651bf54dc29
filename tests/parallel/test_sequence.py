"""Sequence-parallel attention (`research.parallel.sequence`) equals the unsharded mixer.

Each row packs three sequences, then padding: boundaries fall inside shards (5, 25 and 13, 29 tokens in) and on a
shard boundary (16), so on the 8-shard mesh (4 tokens a shard) sequences span up to three shards and the last shard
holds only padding. Outputs are compared with the registered mixer's own `apply` on one device, in fp32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import research.attention as attention
from research.attention.masks import Segments
from research.parallel.sequence import sequence_parallel_attention, supported

B, L, H, D = 2, 32, 2, 8
LENGTHS = ((5, 11, 9), (13, 3, 10))

CASES = {  # test id -> (registry name, config overrides, softmax mode)
  "softmax-ring": ("softmax", None, "ring"),
  "softmax-allgather": ("softmax", None, "allgather"),
  "linear": ("linear", None, "ring"),
  "performer": ("performer", {"num_features": 16, "orthogonal": False}, "ring"),
  "performer-relu": ("performer", {"num_features": 16, "orthogonal": False, "kernel": "relu"}, "ring"),
  "hedgehog": ("hedgehog", None, "ring"),
  "based": ("based", {"feature_dim": 4}, "ring"),
  "based-window": ("based", {"feature_dim": 4, "window": 3}, "ring"),
  "cosformer": ("cosformer", None, "ring"),
  "retention": ("retention", None, "ring"),
  "gla": ("gla", {"chunk_size": 8, "sub_chunk_size": 4}, "ring"),
}
MESHES = {"seq8": ((8,), ("seq",), None), "data2-seq4": ((2, 4), ("data", "seq"), "data")}

# Measured max |sharded − unsharded| over both meshes and directions: ≤ 8.4e-7 (outputs up to ~2.7) for every case
# but based-window, 9.2e-6: its window correction e^(s−m) − e^(−m)τ(s) cancels, and the unsharded path itself is
# 1.0e-5 away from the fp32 oracle (`implied_weights`) there, the sharded one 6.6e-6.
ATOL = 2e-6
ATOL_CANCELLING = {"based-window": 3e-5}


def _segments() -> Segments:
  ids, pos = np.zeros((B, L), np.int32), np.zeros((B, L), np.int32)
  for row, lengths in enumerate(LENGTHS):
    start = 0
    for i, n in enumerate(lengths):
      ids[row, start : start + n], pos[row, start : start + n] = i + 1, np.arange(n)
      start += n
  return Segments(jnp.asarray(ids), jnp.asarray(pos), max_segments=max(map(len, LENGTHS)))


SEGMENTS = _segments()
Q, K, V = (jax.random.normal(key, (B, L, H, D), jnp.float32) for key in jax.random.split(jax.random.key(1), 3))


@functools.cache
def _mesh(mesh_id: str):
  shape, names, batch_axes = MESHES[mesh_id]
  return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names)), batch_axes


@functools.cache
def _variables(case: str):
  name, config, _ = CASES[case]
  mixer = attention.build(name, config)
  return mixer, jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), Q, K, V, SEGMENTS, False)


@functools.cache
def _unsharded(case: str) -> dict[bool, jax.Array]:
  """{causal: output} of the mixer on one device (one compiled program for both directions)."""
  mixer, variables = _variables(case)
  return jax.jit(lambda var: {c: mixer.apply(var, Q, K, V, SEGMENTS, c) for c in (False, True)})(variables)


@functools.cache
def _sharded(case: str, mesh_id: str) -> dict[bool, jax.Array]:
  """{causal: output} of `sequence_parallel_attention` on the mesh (one compiled program for both directions)."""
  name, config, mode = CASES[case]
  mesh, batch_axes = _mesh(mesh_id)
  q, k, v, segments = jax.device_put((Q, K, V, SEGMENTS), NamedSharding(mesh, P(batch_axes, "seq")))
  run = jax.jit(
    lambda var, q, k, v, segments: {
      c: sequence_parallel_attention(
        name,
        q,
        k,
        v,
        segments,
        mesh=mesh,
        batch_axes=batch_axes,
        causal=c,
        config=config,
        variables=var,
        softmax_mode=mode,
      )
      for c in (False, True)
    }
  )
  return run(_variables(case)[1], q, k, v, segments)


@pytest.mark.parametrize("mesh_id", list(MESHES))
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_unsharded(case, causal, mesh_id):
  out, ref = _sharded(case, mesh_id)[causal], _unsharded(case)[causal]
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=0, atol=ATOL_CANCELLING.get(case, ATOL))
  assert out.sharding.spec[:2] == (_mesh(mesh_id)[1], "seq")  # L stays split over "seq" (B over "data")


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_ring_and_allgather_agree(causal):
  ring, gathered = _sharded("softmax-ring", "seq8")[causal], _sharded("softmax-allgather", "seq8")[causal]
  np.testing.assert_allclose(np.asarray(ring), np.asarray(gathered), rtol=0, atol=1e-6)  # measured ≤ 2.4e-7


def test_every_case_is_supported():
  assert sorted({name for name, _, _ in CASES.values()}) == supported()


def test_unsupported_variant_is_a_clear_error():
  with pytest.raises(ValueError, match=r"'linformer' has no sequence-parallel path; supported: based, cosformer"):
    sequence_parallel_attention("linformer", Q, K, V, SEGMENTS, mesh=_mesh("seq8")[0])


def test_length_must_divide_over_the_seq_axis():
  q = Q[:, :30]
  segments = Segments(SEGMENTS.segment_ids[:, :30], SEGMENTS.positions[:, :30], SEGMENTS.max_segments)
  with pytest.raises(ValueError, match=r"length 30 is not divisible by the 8 shards of mesh axis 'seq'"):
    sequence_parallel_attention("linear", q, q, q, segments, mesh=_mesh("seq8")[0])


def test_bad_softmax_mode_and_missing_axis():
  mesh = _mesh("seq8")[0]
  with pytest.raises(ValueError, match=r"softmax_mode 'flash'; choose one of ring, allgather"):
    sequence_parallel_attention("softmax", Q, K, V, SEGMENTS, mesh=mesh, softmax_mode="flash")
  with pytest.raises(ValueError, match=r"mesh has no axis 'length'"):
    sequence_parallel_attention("softmax", Q, K, V, SEGMENTS, mesh=mesh, axis="length")


def test_based_window_wider_than_a_shard_is_a_clear_error():
  config = {"feature_dim": 4, "window": 6}  # a halo of 5 tokens, shards of 4
  variables = jax.eval_shape(attention.build("based", config).init, jax.random.key(0), Q, K, V, SEGMENTS)
  run = lambda var: sequence_parallel_attention(  # noqa: E731
    "based", Q, K, V, SEGMENTS, mesh=_mesh("seq8")[0], config=config, variables=var
  )
  with pytest.raises(ValueError, match=r"halo of 5 tokens needs more than one neighbouring shard"):
    jax.eval_shape(run, variables)  # raised while tracing
