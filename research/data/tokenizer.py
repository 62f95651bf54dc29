"""Tokenizers: sentencepiece (trained here, deterministically) and a byte-level one for LRA-style tasks.

Both share one id convention so heads and pipelines never special-case them:
``pad=0``, ``unk=1``, ``[CLS]=2``, ``[SEP]=3``, ``[MASK]=4``; sentencepiece pieces follow, bytes are
``5 + byte``. Sentencepiece is trained single-threaded on the sentences in the order given, with input
shuffling off, so the same texts and options give a byte-identical model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = ("[CLS]", "[SEP]", "[MASK]")
MODEL_TYPES = ("unigram", "bpe")


class ByteTokenizer:
  """UTF-8 bytes -> ids 5..260 (LRA's byte-level text tasks)."""

  pad_id, unk_id, cls_id, sep_id, mask_id = PAD, UNK, CLS, SEP, MASK
  offset = 5
  vocab_size = 5 + 256

  def encode(self, text: str) -> list[int]:
    return (np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + self.offset).tolist()

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Iterable[int]) -> str:
    return bytes(i - self.offset for i in ids if i >= self.offset).decode("utf-8", errors="replace")

  def encode_with_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and, per byte, the [start, end) character span of the character it belongs to."""
    ids = self.encode(text)
    chars = np.repeat(np.arange(len(text)), [len(c.encode("utf-8")) for c in text])
    return ids, [(int(c), int(c) + 1) for c in chars]


@dataclasses.dataclass(frozen=True)
class SentencePieceOptions:
  vocab_size: int = 8000
  model_type: str = "unigram"
  character_coverage: float = 0.9995
  byte_fallback: bool = True
  max_sentence_length: int = 8192
  input_sentence_size: int = 0  # 0: use every sentence

  def __post_init__(self):
    if self.model_type not in MODEL_TYPES:
      raise ValueError(f"model_type={self.model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    if not _is_int(self.vocab_size) or not 16 <= self.vocab_size <= 1_000_000:
      raise ValueError(f"vocab_size={self.vocab_size!r}; expected an integer in [16, 1000000]")
    coverage = self.character_coverage
    if isinstance(coverage, bool) or not isinstance(coverage, int | float) or not 0.9 <= coverage <= 1.0:
      raise ValueError(f"character_coverage={coverage!r}; expected a value in [0.9, 1.0]")
    if not isinstance(self.byte_fallback, bool):
      raise ValueError(f"byte_fallback={self.byte_fallback!r}; expected True or False")
    if not _is_int(self.max_sentence_length) or self.max_sentence_length < 1:
      raise ValueError(f"max_sentence_length={self.max_sentence_length!r}; expected a positive integer (bytes)")
    if not _is_int(self.input_sentence_size) or self.input_sentence_size < 0:
      raise ValueError(f"input_sentence_size={self.input_sentence_size!r}; expected an integer >= 0 (0: all)")


def _is_int(value) -> bool:
  return isinstance(value, int | np.integer) and not isinstance(value, bool)


class SentencePieceTokenizer:
  """A loaded sentencepiece model with the project's special ids."""

  pad_id, unk_id, cls_id, sep_id, mask_id = PAD, UNK, CLS, SEP, MASK

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    ids = [self.sp.pad_id(), self.sp.unk_id(), *(self.sp.piece_to_id(s) for s in SPECIALS)]
    if ids != [PAD, UNK, CLS, SEP, MASK]:
      raise ValueError(
        f"sentencepiece model has special ids {ids}; expected {[PAD, UNK, CLS, SEP, MASK]} "
        f"(train it with research.data.tokenizer.train_sentencepiece)"
      )
    self.vocab_size = self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self.sp.encode(list(texts))

  def decode(self, ids: Iterable[int]) -> str:
    return self.sp.decode([int(i) for i in ids if int(i) not in (PAD, CLS, SEP, MASK)])

  def pieces(self, text: str) -> list[str]:
    return self.sp.encode(text, out_type=str)

  def encode_with_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids (as `encode`) and each piece's [start, end) character span in `text`, leading whitespace excluded.

    Sentencepiece reports UTF-8 byte offsets; the byte-fallback pieces of one character share its span.
    """
    proto = self.sp.encode(text, out_type="proto")
    char_start = np.cumsum([0] + [len(c.encode("utf-8")) for c in text])  # byte offset of each character
    ids, spans = [], []
    for piece in proto.pieces:
      start = int(np.searchsorted(char_start, piece.begin, side="right")) - 1
      end = max(int(np.searchsorted(char_start, piece.end, side="left")), min(start + 1, len(text)))
      while start < end - 1 and text[start].isspace():
        start += 1
      ids.append(piece.id)
      spans.append((start, end))
    return ids, spans

  def save(self, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(self.model_proto)
    return path


def train_sentencepiece(
  sentences: Iterable[str], options: SentencePieceOptions = SentencePieceOptions()
) -> SentencePieceTokenizer:
  """Train on `sentences` (in order; empty lines dropped) -> tokenizer. Deterministic for equal inputs."""
  sentences = [s for s in (s.strip() for s in sentences) if s]
  if not sentences:
    raise ValueError("no text to train a sentencepiece model on")
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=model,
      vocab_size=options.vocab_size,
      model_type=options.model_type,
      character_coverage=options.character_coverage,
      byte_fallback=options.byte_fallback,
      pad_id=PAD,
      unk_id=UNK,
      bos_id=-1,
      eos_id=-1,
      user_defined_symbols=list(SPECIALS),
      num_threads=1,
      shuffle_input_sentence=False,
      input_sentence_size=options.input_sentence_size,
      max_sentence_length=options.max_sentence_length,
      hard_vocab_limit=False,
      minloglevel=2,
    )
  except RuntimeError as e:  # e.g. vocab_size larger than the corpus supports
    raise ValueError(f"sentencepiece training failed: {e}") from e
  return SentencePieceTokenizer(model.getvalue())


def load(path: str | Path) -> SentencePieceTokenizer:
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no sentencepiece model at {path}; train one with `research data tokenizer`")
  try:
    return SentencePieceTokenizer(path.read_bytes())
  except RuntimeError as e:  # not a serialized sentencepiece ModelProto
    raise ValueError(f"{path} is not a sentencepiece model: {e}") from e


def cached_sentencepiece(
  name: str, sentences_fn, options: SentencePieceOptions, cache_dir: str | Path
) -> SentencePieceTokenizer:
  """Train once per (name, options, text) and reuse from cache_dir/<name>-<hash>.model afterwards."""
  sentences = list(sentences_fn())
  digest = hashlib.sha256(json.dumps([dataclasses.asdict(options), sentences]).encode()).hexdigest()[:16]
  path = Path(cache_dir) / f"{name}-{digest}.model"
  if path.is_file():
    return load(path)
  tok = train_sentencepiece(sentences, options)
  tmp = path.with_suffix(".tmp")
  tok.save(tmp)
  tmp.replace(path)
  return tok
