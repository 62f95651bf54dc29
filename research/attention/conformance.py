"""The conformance suite as a library: every claim a variant's Capabilities make, checked on small random inputs.

    checks = conformance.check("linear")     # list[Check], one per claim (and per causal mode)
    print(conformance.report(checks))        # a markdown table

`tests/attention/test_conformance.py` runs the same functions for every registered variant, one test per check;
a notebook can run them on a variant it has just registered in its own kernel. What is checked, per declared
capability:

  * implied weights: the output matches the fp32 reference `A v` from `implied_weights` on a padded batch (relative
    RMS error), with exact zeros at padded queries and weights of shape BxHxLxS in fp32; gradients of q, k, v
    match the reference's; bfloat16 inputs stay within a stated tolerance of the fp32 reference;
  * packing: one row per sequence (padded) == the sequences packed into one row == each sequence alone;
  * causal: changing token t changes nothing before t;
  * length invariance: extra padding (with garbage under it) changes nothing;
  * always: whatever is not declared (causal, packing, implied weights, unknown options) is a clear ValueError.

A variant that needs a looser tolerance gets an entry, with the reason, in TOLERANCE / BF16_TOLERANCE_OVERRIDES.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import research.attention as attention
from research.attention.masks import Segments
from research.attention.reference import reference_attention, relative_rms_error

# Relative RMS tolerance vs the fp32 reference: 1e-5 unless a variant's normaliser is not bounded away from 0
# (then the reason is stated here).
TOLERANCE: dict[str, float] = {}
GRAD_TOLERANCE = 1e-4  # relative RMS error of each of dq, dk, dv vs the reference's
# bf16 inputs vs the fp32 oracle on the same (bf16-rounded) inputs: relative RMS error, stated per variant.
BF16_TOLERANCE = 3e-2
BF16_TOLERANCE_OVERRIDES: dict[str, float] = {}
# padded == packed == alone, extra padding: elementwise |a - b| <= ATOL + RTOL |b| (np.testing.assert_allclose)
ATOL, RTOL = 2e-6, 1e-5
LENGTHS = [5, 9, 1, 7]  # the packed sequences; includes a segment of length 1


@dataclasses.dataclass(frozen=True)
class Check:
  """One claim checked on one variant. `value` is the measured number (None where the check is pass/fail)."""

  variant: str
  check: str
  causal: bool | None  # None: the check has no causal mode
  passed: bool
  value: float | None = None
  tolerance: str = ""
  detail: str = ""

  def __str__(self) -> str:
    mode = "" if self.causal is None else f" (causal={self.causal})"
    value = "" if self.value is None else f": {self.value:.3g}"
    limit = f" (limit {self.tolerance})" if self.tolerance else ""
    verdict = "passed" if self.passed else "FAILED"
    return f"{self.variant} {self.check}{mode} {verdict}{value}{limit}" + (f"; {self.detail}" if self.detail else "")


# --- inputs and the oracle ---


def qkv(key, b, length, h=2, d=8, dtype=jnp.float32):
  """Random q, k, v of shape b x length x h x d."""
  kq, kk, kv = jax.random.split(key, 3)
  shape = (b, length, h, d)
  return tuple(jax.random.normal(k, shape, dtype) for k in (kq, kk, kv))


def packed_segments(lengths: list[int], row_length: int) -> Segments:
  """One row holding the sequences back to back (ids 1..n), then padding."""
  ids, pos = np.zeros(row_length, np.int32), np.zeros(row_length, np.int32)
  start = 0
  for i, n in enumerate(lengths):
    ids[start : start + n] = i + 1
    pos[start : start + n] = np.arange(n)
    start += n
  assert start <= row_length
  return Segments(jnp.asarray(ids)[None], jnp.asarray(pos)[None], max_segments=len(lengths))


def reference_output(mixer, variables, q, k, v, segments: Segments, causal: bool):
  """The oracle: fp32 reference from implied weights, then the mixer's own output normalisation if it has one."""
  weights = mixer.apply(variables, q, k, v, segments, causal, method="implied_weights")
  out = reference_attention(weights, v)
  if hasattr(type(mixer), "finalize"):
    out = mixer.apply(variables, out, segments, method="finalize")
  return out


def _init(mixer, q, k, v, segments: Segments, causal: bool):
  return jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, causal)


def init_apply(name: str, q, k, v, segments: Segments, causal: bool, overrides=None, method=None):
  """Init and apply one mixer, each under jit (eager op-by-op dispatch is ~10x slower on CPU)."""
  mixer = attention.build(name, overrides)
  variables = _init(mixer, q, k, v, segments, causal)
  apply = jax.jit(lambda variables, q, k, v, segments: mixer.apply(variables, q, k, v, segments, causal, method=method))
  return apply(variables, q, k, v, segments)


def causal_modes(name: str) -> list[bool]:
  return [False, True] if attention.capabilities(name).supports_causal else [False]


def _close(label: str, a, b) -> tuple[float, list[str]]:
  """(max |a - b|, problems): assert_allclose(a, b, atol=ATOL, rtol=RTOL) as data."""
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  if a.shape != b.shape:
    return float("nan"), [f"{label}: shape {a.shape} vs {b.shape}"]
  diff = float(np.max(np.abs(a - b), initial=0.0)) if a.size else 0.0
  ok = np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
  return diff, [] if ok.all() else [f"{label}: {int((~ok).sum())} of {ok.size} entries differ (max {diff:.3g})"]


def _nonzero(label: str, x) -> list[str]:
  x = np.asarray(x)
  return [] if np.all(x == 0) else [f"{label}: {int(np.count_nonzero(x))} non-zero entries"]


# --- the checks: each returns one Check (or a list); unexpected exceptions propagate ---


def fp32_reference(name: str, causal: bool) -> Check:
  """Output vs the fp32 reference from its implied weights on a padded batch; exact zeros at padding."""
  tol = TOLERANCE.get(name, 1e-5)
  q, k, v = qkv(jax.random.key(1), 3, 40)
  segments = Segments.from_lengths(jnp.array([40, 23, 7]), 40)
  mixer = attention.build(name)
  variables = _init(mixer, q, k, v, segments, causal)
  out = jax.jit(lambda *a: mixer.apply(variables, *a, causal))(q, k, v, segments)
  weights = jax.jit(lambda *a: mixer.apply(variables, *a, causal, method="implied_weights"))(q, k, v, segments)
  problems = []
  if out.shape != q.shape or out.dtype != q.dtype:
    problems.append(f"output {out.shape} {out.dtype}, expected {q.shape} {q.dtype}")
  if weights.shape != (3, 2, 40, 40) or weights.dtype != jnp.float32:
    problems.append(f"implied weights {weights.shape} {weights.dtype}, expected (3, 2, 40, 40) float32")
  err = float("nan")
  if not problems:
    ref = jax.jit(lambda *a: reference_output(mixer, variables, *a, causal))(q, k, v, segments)
    err = relative_rms_error(out, ref)
    if not err <= tol:
      problems.append(f"relative RMS error {err:.3g} > {tol:g}")
    problems += _nonzero("padding of row 1", np.asarray(out)[1, 23:]) + _nonzero(
      "padding of row 2", np.asarray(out)[2, 7:]
    )
  return Check(name, "fp32 reference, padded", causal, not problems, err, f"{tol:g} rel. RMS", "; ".join(problems))


def padded_packed_alone(name: str, causal: bool) -> Check:
  """Sequences one per row (padded) == packed back to back in one row == each alone; zeros after the packed ones."""
  total, row = sum(LENGTHS), sum(LENGTHS) + 3  # packed row with an empty tail
  q, k, v = qkv(jax.random.key(2), 1, total)
  starts = np.cumsum([0] + LENGTHS)
  pieces = [(q[:, s:e], k[:, s:e], v[:, s:e]) for s, e in zip(starts[:-1], starts[1:], strict=True)]

  alone = [
    init_apply(name, *p, Segments.from_lengths(jnp.array([n]), n), causal)[0]
    for p, n in zip(pieces, LENGTHS, strict=True)
  ]

  pad_len = max(LENGTHS) + 2
  padded_in = [
    jnp.stack([jnp.pad(p[i][0], ((0, pad_len - p[i].shape[1]), (0, 0), (0, 0))) for p in pieces]) for i in range(3)
  ]
  padded = init_apply(name, *padded_in, Segments.from_lengths(jnp.array(LENGTHS), pad_len), causal)

  packed_in = [jnp.pad(x, ((0, 0), (0, row - total), (0, 0), (0, 0))) for x in (q, k, v)]
  packed = init_apply(name, *packed_in, packed_segments(LENGTHS, row), causal)[0]

  worst, problems = 0.0, []
  ends = zip(starts[:-1], starts[1:], strict=True)
  layouts = {"padded": [padded[i, :n] for i, n in enumerate(LENGTHS)], "packed": [packed[s:e] for s, e in ends]}
  for label, rows in layouts.items():
    found = [_close(f"sequence {i}", got, alone[i]) for i, got in enumerate(rows)]
    worst = max([worst] + [diff for diff, _ in found])
    bad = [i for i, (_, ps) in enumerate(found) if ps]
    if bad:
      problems.append(f"{label} != alone for sequences {bad}; {found[bad[0]][1][0]}")
  problems += _nonzero("packed row's padding", np.asarray(packed)[total:])
  return Check(
    name,
    "padded == packed == alone",
    causal,
    not problems,
    worst,
    f"atol {ATOL:g} + rtol {RTOL:g}",
    "; ".join(problems),
  )


def causal_ignores_future(name: str) -> Check:
  """Adding 3 to q, k, v at token t leaves every output before t bitwise unchanged (and changes the one at t)."""
  q, k, v = qkv(jax.random.key(3), 2, 32)
  segments = Segments.from_lengths(jnp.array([32, 30]), 32)
  t = 17
  base = np.asarray(init_apply(name, q, k, v, segments, True))
  moved = np.asarray(init_apply(name, *[x.at[:, t].add(3.0) for x in (q, k, v)], segments, True))
  past = float(np.max(np.abs(moved[:, :t] - base[:, :t])))
  problems = [] if np.array_equal(moved[:, :t], base[:, :t]) else [f"outputs before t={t} changed (max {past:.3g})"]
  if np.allclose(moved[:, t], base[:, t]):
    problems.append(f"the output at t={t} did not change either: the test input has no effect")
  return Check(name, "causal: the future is ignored", True, not problems, past, "exactly 0", "; ".join(problems))


def extra_padding(name: str) -> Check:
  """A 20-token sequence alone == the same sequence followed by 12 padding positions holding garbage."""
  q, k, v = qkv(jax.random.key(4), 1, 20)
  short = init_apply(name, q, k, v, Segments.from_lengths(jnp.array([20]), 20), False)
  pad = [jnp.pad(x, ((0, 0), (0, 12), (0, 0), (0, 0))) + 0.0 for x in (q, k, v)]
  pad = [x.at[:, 20:].set(5.0) for x in pad]  # garbage under the padding must not leak
  long = init_apply(name, *pad, Segments.from_lengths(jnp.array([20]), 32), False)
  diff, problems = _close("first 20 outputs", long[:, :20], short)
  return Check(
    name,
    "extra padding changes nothing",
    None,
    not problems,
    diff,
    f"atol {ATOL:g} + rtol {RTOL:g}",
    "; ".join(problems),
  )


def gradients(name: str, causal: bool) -> Check:
  """dq, dk, dv of a random linear function of the output vs the same through the fp32 reference."""
  q, k, v = qkv(jax.random.key(5), 2, 24)
  segments = Segments.from_lengths(jnp.array([24, 13]), 24)
  w = jax.random.normal(jax.random.key(6), q.shape)
  mixer = attention.build(name)
  variables = _init(mixer, q, k, v, segments, causal)

  def fast(q, k, v):
    return jnp.sum(mixer.apply(variables, q, k, v, segments, causal) * w)

  def ref(q, k, v):
    return jnp.sum(reference_output(mixer, variables, q, k, v, segments, causal) * w)

  grads = [jax.jit(jax.grad(f, (0, 1, 2)))(q, k, v) for f in (fast, ref)]
  errs = [relative_rms_error(g_fast, g_ref) for g_fast, g_ref in zip(*grads, strict=True)]
  bad = [
    f"d{x} rel. RMS {e:.3g} > {GRAD_TOLERANCE:g}" for x, e in zip("qkv", errs, strict=True) if not e <= GRAD_TOLERANCE
  ]
  return Check(
    name, "gradients vs reference", causal, not bad, max(errs), f"{GRAD_TOLERANCE:g} rel. RMS", "; ".join(bad)
  )


def _raises(call: Callable[[], object], pattern: str) -> tuple[bool, str]:
  """(raised a ValueError whose message matches `pattern`, what happened); other exceptions propagate."""
  try:
    call()
  except ValueError as e:
    found = re.search(pattern, str(e)) is not None
    return found, "" if found else f"ValueError without {pattern!r}: {e}"
  return False, "no error raised"


def clear_errors(name: str) -> list[Check]:
  """Every use the variant does not declare is a ValueError saying so; its capabilities are filled in."""
  caps = attention.capabilities(name)
  q, k, v = qkv(jax.random.key(7), 1, 8)
  one = Segments.from_lengths(jnp.array([8]), 8)
  calls = []
  if not caps.supports_causal:
    calls.append(("causal=True is a clear error", "causal", lambda: init_apply(name, q, k, v, one, True)))
  if not caps.supports_packing:
    calls.append(
      ("packed rows are a clear error", "packed", lambda: init_apply(name, q, k, v, packed_segments([4, 4], 8), False))
    )
  if not caps.implied_weights:
    calls.append(
      (
        "implied_weights is a clear error",
        "no implied attention matrix",
        lambda: init_apply(name, q, k, v, one, False, method="implied_weights"),
      )
    )
  calls.append(
    ("unknown option is a clear error", "unknown option", lambda: attention.build(name, {"no_such_option": 1}))
  )
  checks = []
  for label, pattern, call in calls:
    ok, detail = _raises(call, pattern)
    checks.append(Check(name, label, None, ok, detail=detail))
  filled = caps.state_size(128, 2, 8) > 0 and caps.complexity.startswith("O(") and bool(caps.paper)
  detail = "" if filled else "needs state_size(L, H, D) > 0, complexity 'O(...)' and paper"
  checks.append(Check(name, "capabilities filled in", None, filled, detail=detail))
  return checks


def bfloat16(name: str) -> Check:
  """bf16 q, k, v give a bf16 output within BF16_TOLERANCE of the fp32 reference on the same rounded inputs."""
  tol = BF16_TOLERANCE_OVERRIDES.get(name, BF16_TOLERANCE)
  q, k, v = qkv(jax.random.key(8), 2, 32, dtype=jnp.bfloat16)
  segments = Segments.from_lengths(jnp.array([32, 19]), 32)
  mixer = attention.build(name)
  variables = _init(mixer, q, k, v, segments, False)
  out = jax.jit(lambda *a: mixer.apply(variables, *a, False))(q, k, v, segments)
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  ref = jax.jit(lambda *a: reference_output(mixer, variables, *a, False))(*f32, segments)
  err = relative_rms_error(out, ref)
  problems = [] if out.dtype == jnp.bfloat16 else [f"output dtype {out.dtype}, expected bfloat16"]
  problems += [] if err <= tol else [f"relative RMS error {err:.3g} > {tol:g}"]
  return Check(name, "bfloat16 inputs", False, not problems, err, f"{tol:g} rel. RMS", "; ".join(problems))


# --- the whole suite for one variant ---


def _safely(name: str, label: str, causal: bool | None, run: Callable[[], Check | list[Check]]) -> list[Check]:
  """The check's result(s), or one failed Check naming the exception it raised."""
  try:
    result = run()
  except Exception as e:  # a report shows the failure instead of stopping at it
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return [Check(name, label, causal, False, detail=f"raised {type(e).__name__}: {first}")]
  return result if isinstance(result, list) else [result]


def check(name: str) -> list[Check]:
  """Every check that `name`'s Capabilities call for (what the pytest suite runs for a registered variant)."""
  caps = attention.capabilities(name)  # unknown name -> the registry's clear error
  modes = causal_modes(name)
  plan: list[tuple[str, bool | None, Callable[[], Check | list[Check]]]] = []
  if caps.implied_weights:
    plan += [("fp32 reference, padded", c, lambda c=c: fp32_reference(name, c)) for c in modes]
  if caps.supports_packing:
    plan += [("padded == packed == alone", c, lambda c=c: padded_packed_alone(name, c)) for c in modes]
  if caps.supports_causal:
    plan.append(("causal: the future is ignored", True, lambda: causal_ignores_future(name)))
  if caps.length_invariant:
    plan.append(("extra padding changes nothing", None, lambda: extra_padding(name)))
  if caps.implied_weights:
    plan += [("gradients vs reference", c, lambda c=c: gradients(name, c)) for c in modes]
    plan.append(("bfloat16 inputs", False, lambda: bfloat16(name)))
  plan.append(("clear errors", None, lambda: clear_errors(name)))
  return [c for label, causal, run in plan for c in _safely(name, label, causal, run)]


def report(checks: list[Check]) -> str:
  """A markdown table of `checks`, in order, and a count of the failures."""
  lines = ["| variant | check | causal | result | measured | limit | detail |", "|---|---|---|---|---|---|---|"]
  for c in checks:
    value = "" if c.value is None else f"{c.value:.2e}"
    mode = "" if c.causal is None else str(c.causal)
    verdict = "pass" if c.passed else "**FAIL**"
    detail = c.detail.replace("|", "\\|")
    lines.append(f"| {c.variant} | {c.check} | {mode} | {verdict} | {value} | {c.tolerance} | {detail} |")
  failed = sum(not c.passed for c in checks)
  lines.append(f"\n{len(checks) - failed} of {len(checks)} checks passed" + (f", {failed} FAILED" if failed else ""))
  return "\n".join(lines)
