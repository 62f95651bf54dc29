"""Analytic forward FLOPs of one call of each registered attention variant.

    attention_flops(name, cfg, batch, length, heads, head_dim, causal=False) -> float

counts what the variant's code computes on q, k, v of shape [B, L, H, D] (self-attention, S = L, one full-length
sequence per row: max_segments = 1, no padding) under its Config `cfg` (None: the defaults). Counted as written,
not as the paper would: a materialised window band, a full logit row sliced afterwards, a causal mask applied to
a full score matrix, a bidirectional pass run as two causal ones all cost what they cost.

Conventions (one set for every variant):
  * a matmul / einsum: 2 FLOPs per multiply-add (2 × the product of all its index sizes), as XLA counts it;
  * elementwise ops on the data path (scales, adds, products, divisions, and nonlinearities such as exp, elu,
    relu, cos): 1 FLOP per element each; a reduction (sum, max) or cumulative sum: 1 FLOP per input element;
  * a softmax: SOFTMAX = 5 FLOPs per logit (logit scale, max, subtract and exp, sum, divide);
  * bookkeeping costs 0: masks and the compares/selects that build or apply them, gathers, pads, transposes,
    the zeroing of padded rows, index arithmetic — except reformer's per-score duplicate counts, which are part
    of its algorithm and rival its matmuls at small D;
  * a complex FFT of length n: 8·n·log2(n) FLOPs (XLA's HloCostAnalysis convention: 4 complex multiply-adds per
    element and stage; the textbook radix-2 count is 5·n·log2 n); a complex multiply: 6 FLOPs.
XLA's `cost_analysis()['flops']` of the same forward program differs from these counts in known ways: it counts
mask compares and selects (a few % to ~15% at D = 16, less at larger D), not transcendentals (exp, log, sin, ...:
reported as 'transcendentals'), a `lax.scan` body only once whatever its trip count, and a cumulative sum (lowered
to a reduce-window on CPU) at up to n FLOPs per element. tests/bench/test_flops.py pins every scan-free variant
to within 25% of XLA at two lengths, and its scaling in L to within 10%.

Forward + backward: `attention_flops_fwd_bwd` = 3 × forward, the standard convention (the backward pass of a
matmul is two matmuls of the same size: the gradients with respect to both inputs). It is an estimate: stop-
gradient stabilisers and hashing have no backward, and recomputation (rematerialisation) is not counted.

Formulas at the default configs (C: chunk or block size, F: feature dim, m: landmarks or random features,
P: projected length, ℓ: max_len, W: key slots of a query block; lower-order terms are in the code):

  softmax        4·B·H·L²·D + 5·B·H·L²                        (the XLA path scores all L² pairs, causal or not)
  linear         4·B·H·L·F·D + 3·B·H·L·F + B·H·L·D + 4·B·L·H·D,  F = D (elu+1)
                 causal chunked: + 2·B·H·L·C·(F + D + 1),  C = min(chunk_size, L)
  performer      4·B·L·H·D·m (W q', W k') + 4·B·H·L·m·D + 16·B·L·H·m + 5·B·L·H·D,  m = num_features
                 causal: + 2·B·H·L·C·(2·m + D + 5) (the running key sums and the stabilised chunked core)
  local          (4·D + 5)·B·H·L·W + B·H·L·D,  W = 3C key slots per query (2C causal), C = block_size (= window)
  longformer     local + (4·D + 5)·B·H·2·L·g + 5·B·H·L·D,  g = len(global_positions)
  bigbird        (4·D + 5)·B·H·(n_g·b·L + (L − n_g·b)·K·b),  K = n_g + w + r key blocks (n_g + w//2 + 1 + r causal),
                 b = block_size (L rounded up to b)
  linformer      8·B·H·L·P·D + 5·B·H·L·P,  P = proj_dim (E k and F v, logits, output)
  synthesizer    dense: 2·B·L·H·D·(D + ℓ) + B·L·H·ℓ + 2·B·H·L²·D + 5·B·H·L²  (all ℓ = max_len logits, then sliced)
  reformer       (4·D + 7 + 9·n_h)·B·H·n_h·P·2c + 2·B·H·n_h·L·D·n_b/2,  P = L + n_b·(c − 1) slots (rounded to c)
  nystromformer  8·B·H·m³·iters + 12·B·H·L·m·D + 4·B·H·m²·D + 5·B·H·(2·L·m + m²),  m = min(num_landmarks, L)
  cosformer      linear's core with F = 2D, + the feature maps 6·B·L·H·D
  fnet           8·B·(2·H·D + 1)·M·log2 M + 8·B·L·H·D·log2(H·D) + 6·B·(2·L + M)·H·D,  M = 2^⌈log2(2L − 1)⌉
  hedgehog       linear's core with F = 2F', + the maps 2·(2·B·L·H·D·F' + 12·B·L·H·F'),  F' = feature_dim or D
  retention      one causal chunked pass over 2B (both directions): 4·B·H·L·C·(F + D + 2) + 8·B·H·L·F·D + 8·B·H·L·F,
                 F = D, C = min(chunk_size, L)
  based          linear's core with F = 1 + d' + d'², + 2·(2·B·L·H·D·d' + 2·B·L·H·d'²),  d' = feature_dim
  gla            one causal chunked pass over 2B: 4·B·H·L·C·(F + D) + 14·B·H·L·s·F + 8·B·H·L·F·D + gate 4·B·L·H·D·r,
                 F = D, C = min(chunk_size, L), s = sub_chunk_size
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from research import attention
from research.attention.fnet import fft_size
from research.attention.reformer import num_slots

SOFTMAX = 5  # FLOPs per logit of a softmax: scale, max, subtract + exp, sum, divide


def _ceil_to(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


# --- shared cores ------------------------------------------------------------------------------------------------


def linear_core(
  B: int, L: int, H: int, F: int, D: int, *, causal: bool, form: str, chunk: int, normalize: bool = True
) -> int:
  """`linear.linear_attention` over F features: Σ φ(k) vᵀ, φ(q)·state, and the normaliser φ(q)·Σ φ(k).

  bidirectional: 4·B·H·L·F·D (+ 3·B·H·L·F + B·H·L·D normaliser);  causal parallel: 2·B·H·L²·(F + D + 1) more;
  chunked: 2·B·H·Lp·C·(F + D + 1) more with C = min(chunk, L), Lp = L rounded up to C;  recurrent: per token.
  """
  norm = B * H * L * D if normalize else 0  # the division by the normaliser
  den = 3 if normalize else 0  # Σ_j φ(k_j) and φ(q_i)·z (2), per feature
  if not causal:
    return 4 * B * H * L * F * D + den * B * H * L * F + norm
  if form == "recurrent":  # per token: kv += k vᵀ (2FD), z += k, q·kv (2FD), q·z
    return L * (4 * B * H * F * D + 3 * B * H * F) + norm
  C = L if form == "parallel" else min(chunk, L)
  Lp = _ceil_to(L, C)
  # per block of C tokens: masked scores (2C²F + C²), scores·v (2C²D), row sums (C²), the carried-state terms
  # q·kv0 and kv += kᵀv (4CFD), q·z0 and z += Σk (3CF)
  return B * H * Lp * (2 * C * (F + D) + 2 * C + 4 * F * D + 3 * F) + norm


def decay_core(
  B: int, L: int, H: int, F: int, D: int, *, per_dim: bool, causal: bool, form: str, chunk: int, sub: int
) -> int:
  """`decay.decay_attention` (retention: one log-decay per head; gla: one per key dimension, `per_dim`).

  Bidirectional runs ONE causal pass over a 2B batch (forward + reversed sequence), so it costs 2× causal.
  """
  if not causal:
    # the reversed pass's queries q̂ = q ⊙ exp(g) (2 per element) and the sum of the two directions
    return decay_core(2 * B, L, H, F, D, per_dim=per_dim, causal=True, form=form, chunk=chunk, sub=sub) + (
      2 * B * L * H * F + B * L * H * D
    )
  G = F if per_dim else 1
  if form == "recurrent":  # per token: exp(g)·S, k vᵀ, add (3FD + G), q·S (2FD)
    return L * B * H * (5 * F * D + G)
  if form == "parallel":
    decay = 4 * B * H * G * L * L  # segment sums (masked cumsum), exp, per element of the GxLxL decay matrix
    scores = (4 * B * H * L * L * F) if per_dim else (2 * B * H * L * L * F + B * H * L * L)
    state = 2 * B * L * H * F * D + 2 * B * L * H * F + 2 * B * H * L * F * D + 2 * B * L * H * F  # initial/final
    return decay + scores + 2 * B * H * L * L * D + state
  s = sub if per_dim else 1
  C = min(chunk, _ceil_to(L, s))
  Lp = _ceil_to(L, C)
  n = Lp // C
  if per_dim:
    m = C // s
    # diagonal sub-chunks: the pairwise sxs decay per feature (segsum, exp: 3 per element), q ⊗ k then Σ_f
    intra = 3 * B * H * Lp * s * F + 4 * B * H * Lp * s * F
    if m > 1:  # q̂, k̂ (4 per element), the MxM between-decay, and the full CxC chunk scores Σ_f q̂ between k̂
      intra += 4 * B * Lp * H * F + 3 * B * H * n * F * m * m + 2 * B * H * Lp * m * F + 2 * B * H * Lp * C * F
      intra += 3 * B * H * Lp * C  # placing the diagonal blocks (an einsum with the MxM identity) and the sum
  else:
    intra = 3 * B * H * Lp * C + 2 * B * H * Lp * C * F + B * H * Lp * C  # CxC decay, q kᵀ, ⊙ decay
  intra += 2 * B * H * Lp * C * D  # scores · v
  # per chunk: what it adds to the state (k ⊙ decay, kᵀv) and each query's read of the carried state
  inter = (
    (2 * B * Lp * H * F + 2 * B * Lp * H * F * D)
    + n * 2 * B * H * F * D
    + (2 * B * Lp * H * F + 2 * B * Lp * H * F * D + B * Lp * H * D)
  )
  return intra + inter


def _check_form(causal: bool, form: str) -> None:
  if causal and form not in ("parallel", "recurrent", "chunked"):
    raise ValueError(f"unknown causal form {form!r}; choose one of parallel, recurrent, chunked")


# --- one function per variant: (cfg, B, L, H, D, causal) -> FLOPs ---------------------------------------------


def _softmax(cfg, B, L, H, D, causal):
  """4·B·H·L²·D + 5·B·H·L²: q kᵀ, softmax, p v over all L² pairs (a causal mask does not skip work)."""
  return 4 * B * H * L * L * D + SOFTMAX * B * H * L * L


_FEATURE_MAP_FLOPS = {"elu+1": 2, "relu": 1, "identity": 0}  # per element


def _linear(cfg, B, L, H, D, causal):
  """linear_core(F = D) + φ on q and k (elu+1: 2 per element) [+ RMS output norm 4·B·L·H·D if not normalize]."""
  flops = 2 * _FEATURE_MAP_FLOPS[cfg.feature_map] * B * L * H * D
  flops += linear_core(
    B, L, H, D, D, causal=causal, form=cfg.causal_form, chunk=cfg.chunk_size, normalize=cfg.normalize
  )
  return flops + (0 if cfg.normalize else 4 * B * L * H * D)


def _performer(cfg, B, L, H, D, causal):
  """4·B·L·H·D·m (W q', W k') + the FAVOR+ stabilisers + linear_core(F = m); causal: the stabilised chunked core."""
  m = cfg.num_features
  flops = 2 * B * L * H * D + 4 * B * L * H * D * m  # q' = q·D^-1/4, k', then W q', W k'
  if cfg.kernel == "relu":
    flops += 2 * 3 * B * L * H * m  # relu, + kernel_eps, / √m
    return flops + linear_core(B, L, H, m, D, causal=causal, form=cfg.causal_form, chunk=cfg.chunk_size)
  # φ(q): max over features, subtract, exp, /√m; φ(k): ‖k'‖²/2 (2D), subtract, max, subtract μ, exp, /√m;
  # the per-query scale s_i = max_f φ(q)_f Z_f and the division by it (3)
  flops += B * L * H * (4 * m + 2 * D + 5 * m + 3 * m)
  if not causal:
    return flops + B * H * L * m + linear_core(B, L, H, m, D, causal=False, form=cfg.causal_form, chunk=cfg.chunk_size)
  # causal: the running key sums Z_i (chunks of `chunk_size`), then the stabilised causal core in blocks of C
  # (chunked: chunk_size, parallel: L, recurrent: 1). Per query and key of its block: the pair decay
  # e^(min(μ_j − μ_i, 0)) ⊙ tril (4); per key: absorb into the state — new column reference, e^(r − r'), the
  # rescaled features and their sum (5M)
  Ck = min(cfg.chunk_size, L)
  flops += B * H * _ceil_to(L, Ck) * (4 * Ck + 2 * Ck * m + 3 * m + 5 * m)  # Z = decay·φ(k) + read of the state
  C = {"parallel": L, "recurrent": 1}.get(cfg.causal_form, min(cfg.chunk_size, L))
  # per query: pair weights φ(q)·φ(k) ⊙ decay (2CM + 5C), read scale (3M), scores·v and q·kv (2CD + 2MD),
  # row sums and q·z (C + 2M), normalise (D); per key: kv += k vᵀ (2MD) and the rest of the absorb (5M)
  per_token = 2 * C * m + 5 * C + 3 * m + 2 * C * D + 2 * m * D + C + 2 * m + D + 2 * m * D + 5 * m
  return flops + B * H * _ceil_to(L, C) * per_token


def _blockwise(B, H, rows, keys, D):
  """`blockwise.attend` of `rows` queries over `keys` slots each (per batch and head): scores, softmax, p·v, /Σ."""
  return (4 * D + SOFTMAX) * B * H * rows * keys + B * H * rows * D


def _local(cfg, B, L, H, D, causal):
  """(4·D + 5)·B·H·Lp·W + B·H·Lp·D: every block of C rows scores W = 3C slots (2C causal), the band is a mask."""
  C = cfg.block
  return _blockwise(B, H, _ceil_to(L, C), (2 if causal else 3) * C, D)


def _longformer(cfg, B, L, H, D, causal):
  """local + every query against the g global keys + the g global queries against all L keys + the merge."""
  C = cfg.block
  g = min(L, len(cfg.global_positions))  # one sequence per row
  window = _blockwise(B, H, _ceil_to(L, C), (2 if causal else 3) * C, D)
  merge = 4 * B * H * L * D  # two partial results: weight, sum, divide
  return window + _blockwise(B, H, L, g, D) + merge + _blockwise(B, H, g, L, D)


def _bigbird(cfg, B, L, H, D, causal):
  """n_g global query blocks against the whole row + each other block against its K gathered key blocks."""
  C = cfg.block_size
  n = -(-L // C)
  ng = min(cfg.num_global_blocks, n)
  flops = _blockwise(B, H, ng * C, n * C, D)
  if ng < n:
    k = ng + (cfg.window_blocks // 2 + 1 if causal else cfg.window_blocks) + cfg.num_random_blocks
    flops += _blockwise(B, H, (n - ng) * C, k * C, D)
  return flops


def _linformer(cfg, B, L, H, D, causal):
  """E k, F v (4·B·H·P·L·D), logits and output (4·B·H·L·P·D), softmax over the P projected keys."""
  P = cfg.proj_dim
  return 8 * B * H * L * P * D + SOFTMAX * B * H * L * P


def _two_layer(B, L, H, D, out):
  """W2 relu(W1 x + b1) + b2 per head."""
  return 2 * B * L * H * D * D + 2 * B * L * H * D + 2 * B * L * H * D * out + B * L * H * out


def _synthesizer(cfg, B, L, H, D, causal):
  """The synthesized logits (dense: all max_len of them per query), softmax over L keys, weights · v."""
  if cfg.mode == "dense":
    if cfg.factorized:
      fa, fb = cfg.factors
      logits = _two_layer(B, L, H, D, fa) + _two_layer(B, L, H, D, fb) + B * L * H * cfg.max_len  # a ⊗ b
    else:
      logits = _two_layer(B, L, H, D, cfg.max_len)
  else:
    logits = 2 * B * H * L * L * cfg.rank if cfg.factorized else 0  # R1 R2ᵀ, or a gather of R
  return logits + SOFTMAX * B * H * L * L + 2 * B * H * L * L * D


DUPLICATE_OPS = 9  # reformer: integer compares/logic per score and round for the duplicate counts N_ij


def _reformer(cfg, B, L, H, D, causal):
  """Per round: hash, sort into P slots (groups aligned to chunks), chunk c against chunks (c−1, c); merge."""
  r, C, nb = cfg.n_hashes, cfg.chunk_size, cfg.n_buckets
  P = num_slots(L, nb, C)  # one sequence per row: n_buckets groups
  hashing = (2 * B * H * r * L * D * (nb // 2) + B * H * r * L * nb) if nb > 1 else 0  # x R, argmax
  keys = 3 * B * L * H * D  # k̂ = q / ‖q‖
  scores = B * H * r * P * 2 * C
  attend = (4 * D + SOFTMAX + 2) * scores + B * H * r * P * D  # + the duplicate bias −log N_ij (2)
  duplicates = DUPLICATE_OPS * r * scores
  merge = 3 * B * H * r * L * D  # weight, sum, divide over the rounds
  return hashing + keys + attend + duplicates + merge


def _nystromformer(cfg, B, L, H, D, causal):
  """Landmark means (one-hot matmuls), F, A, B, the iterative pseudo-inverse of A (O(m³) per step), F (A⁺ (B v))."""
  m = min(cfg.num_landmarks, L)
  landmarks = 2 * (2 * B * L * m * H * D) + 2 * B * m * H * D  # one-hot matmul per q and k, / counts
  factors = 2 * B * H * D * (L * m + m * m + m * L) + SOFTMAX * B * H * (L * m + m * m + m * L)
  pinv = 4 * B * H * m * m + cfg.pinv_iterations * (4 * 2 * B * H * m**3 + 4 * B * H * m * m)
  output = 2 * B * H * D * (m * L + m * m + L * m)  # B v, A⁺ (B v), F (A⁺ B v)
  return landmarks + factors + pinv + output


def _cosformer(cfg, B, L, H, D, causal):
  """φ(x) = [relu(x) cos, relu(x) sin] (3 per input element) on q and k, linear_core(F = 2D)."""
  return 2 * 3 * B * L * H * D + linear_core(
    B, L, H, 2 * D, D, causal=causal, form=cfg.causal_form, chunk=cfg.chunk_size
  )


def fft_flops(rows: int, n: int) -> float:
  """`rows` complex FFTs of length n: 8·n·log2(n) each (XLA's convention)."""
  return 8 * rows * n * math.log2(n) if n > 1 else 0.0


def _fnet(cfg, B, L, H, D, causal):
  """Channel DFT, then the per-row valid-length sequence DFT by Bluestein: three length-M FFTs (M ≥ 2L − 1)."""
  channels = {"hidden": (B * L, H * D), "head": (B * L * H, D), "none": (0, 1)}[cfg.feature_fft]
  m = fft_size(L)
  flops = fft_flops(*channels)
  flops += fft_flops(2 * B * H * D, m) + fft_flops(B, m)  # FFT and inverse FFT of the signal, FFT of the chirp
  flops += 6 * B * H * D * (2 * L + m)  # complex products: · chirp, spectra, · chirp
  return flops + (B * L * H * D if cfg.norm == "ortho" else 0)


def _hedgehog(cfg, B, L, H, D, causal):
  """Per side: W x + b (2·D·F' + F'), [softmax(u), softmax(−u)] (1 + 2·5 per F'); linear_core(F = 2F')."""
  fp = cfg.feature_dim or D
  maps = 2 * (2 * B * L * H * D * fp + B * L * H * fp * (2 + 2 * SOFTMAX))
  return maps + linear_core(B, L, H, 2 * fp, D, causal=causal, form=cfg.causal_form, chunk=cfg.chunk_size)


def _retention(cfg, B, L, H, D, causal):
  """decay_core with one decay per head (bidirectional: a 2B causal pass), q/√D, D̃ row scale, GroupNorm."""
  flops = B * L * H * D + decay_core(
    B, L, H, D, D, per_dim=False, causal=causal, form=cfg.causal_form, chunk=cfg.chunk_size, sub=1
  )
  flops += B * L * H * D if cfg.normalize_decay else 0
  return flops + 7 * B * L * H * D  # GroupNorm per head: mean, centre, square, mean, scale, ·γ, + β


def _based(cfg, B, L, H, D, causal):
  """P q, P k (2·B·L·H·D·d' each), Taylor features (2·d'² per token), [window correction], linear_core."""
  dp = cfg.feature_dim
  F = 1 + dp + dp * dp
  flops = 2 * (2 * B * L * H * D * dp + B * L * H * dp) + 2 * 2 * B * L * H * dp * dp
  if cfg.window:
    w = cfg.window if causal else 2 * cfg.window - 1  # neighbours per query
    # s = q̃·k̃ (2d'), c = exp(s − m) − exp(−m) τ(s) (~8), c·v (2D), Σ c, max; φ(q)·exp(−m)
    flops += B * L * H * w * (2 * dp + 8 + 2 * D + 2) + B * L * H * F
    F += D + 1  # the correction rides along as D + 1 extra features
  return flops + linear_core(B, L, H, F, D, causal=causal, form=cfg.causal_form, chunk=cfg.chunk_size)


def _gla(cfg, B, L, H, D, causal):
  """Low-rank gate (4·B·L·H·D·r), decay_core with per-dimension decays, q/√D, RMSNorm per head."""
  r = cfg.gate_rank
  gate = 4 * B * L * H * D * r + 3 * B * L * H * D  # k W_down W_up, + b, log σ, / τ
  core = decay_core(
    B, L, H, D, D, per_dim=True, causal=causal, form=cfg.causal_form, chunk=cfg.chunk_size, sub=cfg.sub_chunk_size
  )
  return gate + B * L * H * D + core + 4 * B * L * H * D  # q/√D; RMSNorm: square, mean, scale, ·γ


FORMULAS: dict[str, Callable[[Any, int, int, int, int, bool], int | float]] = {
  "softmax": _softmax,
  "linear": _linear,
  "performer": _performer,
  "local": _local,
  "bigbird": _bigbird,
  "linformer": _linformer,
  "longformer": _longformer,
  "synthesizer": _synthesizer,
  "reformer": _reformer,
  "nystromformer": _nystromformer,
  "cosformer": _cosformer,
  "fnet": _fnet,
  "hedgehog": _hedgehog,
  "retention": _retention,
  "based": _based,
  "gla": _gla,
}


def attention_flops(name: str, cfg, batch: int, length: int, heads: int, head_dim: int, causal: bool = False) -> float:
  """Analytic forward FLOPs of one call of attention `name` under its Config `cfg` (None: the defaults).

  Raises ValueError where the variant itself would refuse the call (unknown name, causal without a causal form,
  a length beyond its max_len or causal_m), so a benchmark never reports FLOPs of a program that cannot run.
  """
  if name not in FORMULAS or name not in attention.names():
    valid = sorted(set(FORMULAS) & set(attention.names()))
    raise ValueError(f"no FLOP formula for attention {name!r}; choose one of {', '.join(valid)}")
  config_cls = attention.get(name).Config
  if cfg is None:
    cfg = attention.make_config(name)
  elif not isinstance(cfg, config_cls):
    raise ValueError(
      f"cfg for attention {name!r} must be its {config_cls.__qualname__}, got "
      f"{type(cfg).__qualname__}; build one with research.attention.make_config({name!r}, overrides)"
    )
  for key, value in (("batch", batch), ("length", length), ("heads", heads), ("head_dim", head_dim)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{key} must be a positive int, got {value!r}")
  if causal and not attention.capabilities(name).supports_causal:
    raise ValueError(f"attention {name!r} does not support causal=True")
  if causal:
    _check_form(causal, getattr(cfg, "causal_form", "chunked"))
  for field in ("max_len",) + (("causal_m",) if causal else ()):
    limit = getattr(cfg, field, None)
    if limit is not None and length > limit:
      raise ValueError(f"{name}: length {length} exceeds {field}={limit}; raise the mixer option {field}")
  return float(FORMULAS[name](cfg, batch, length, heads, head_dim, causal))


def attention_flops_fwd_bwd(
  name: str, cfg, batch: int, length: int, heads: int, head_dim: int, causal: bool = False
) -> float:
  """Forward + backward FLOPs: 3 × `attention_flops` (the backward of a matmul is two matmuls of its size)."""
  return 3.0 * attention_flops(name, cfg, batch, length, heads, head_dim, causal)
