"""Fake 8 CPU devices so that every sharding path runs on CPU (must run before JAX touches a backend).

Tests compile hundreds of tiny programs and run each a few times, so XLA's CPU backend optimisation is
turned off (`--xla_backend_optimization_level=0`): a tiny training run goes from 19 s to 13 s, mostly
compile time. Numerics stay IEEE fp32 (tolerances and bitwise-resume checks compare runs under the same flags).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # with the [peers] extra: torch's OpenMP threads must not spin
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
