"""TrainState and its sharded initialisation (eval_shape -> logical specs -> jit with out_shardings)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from research.train.objectives import model_inputs
from research.train.sharding import LOGICAL_RULES


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32[2] raw key: dropout key of step t is fold_in(rng, t)
  extra: Any = flax.struct.field(default_factory=dict)  # non-trained collections, e.g. random features

  @property
  def variables(self) -> dict:
    """What `model.apply` takes: params plus the non-trained collections."""
    return {"params": self.params, **self.extra}


def create_train_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  seed: int,
  example_batch: dict,
  mesh: Mesh,
  kind: str = "classify",
) -> tuple[TrainState, Any]:
  """Sharded state per LOGICAL_RULES; returns (state, state_shardings)."""

  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    variables = dict(model.init(init_rng, *model_inputs(kind, example_batch)))
    params = variables.pop("params")
    variables.pop("intermediates", None)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), state_rng, variables)

  rng = jax.random.PRNGKey(seed)
  abstract = jax.eval_shape(init, rng)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, LOGICAL_RULES)
  state = jax.jit(init, out_shardings=shardings)(rng)
  return nn.meta.unbox(state), nn.meta.unbox(shardings)


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))
