"""Fake 8 CPU devices so that every sharding path runs on CPU (must run before JAX touches a backend)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
