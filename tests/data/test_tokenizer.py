"""Tokenizers (research/data/tokenizer.py): round trips, determinism, special ids, multilingual training.

Fixtures: tests/data/fixtures/tok_{en,de,fr}.txt, 40 parallel sentences per language written for these tests.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from research.data import tokenizer
from research.data.tokenizer import ByteTokenizer, SentencePieceOptions, train_sentencepiece

FIXTURES = Path(__file__).parent / "fixtures"
LANGS = ("en", "de", "fr")
UNSEEN = "漢字 😀 Ωμέγα"  # characters absent from the fixtures: byte fallback must carry them


@pytest.fixture(scope="module")
def lines() -> dict[str, list[str]]:
  return {lang: (FIXTURES / f"tok_{lang}.txt").read_text(encoding="utf-8").splitlines() for lang in LANGS}


@pytest.fixture(scope="module")
def multilingual(lines):
  return train_sentencepiece([s for lang in LANGS for s in lines[lang]], SentencePieceOptions(vocab_size=1000))


@pytest.mark.parametrize("model_type", tokenizer.MODEL_TYPES)
def test_round_trip_and_byte_fallback(lines, model_type):
  tok = train_sentencepiece(lines["en"] + lines["de"], SentencePieceOptions(vocab_size=450, model_type=model_type))
  assert tok.vocab_size == 450
  for text in [*lines["en"], *lines["de"], UNSEEN, f"Größe: {UNSEEN}, naïve café!"]:
    ids = tok.encode(text)
    assert min(ids) >= 5, text  # no <unk>, no specials in plain text
    assert tok.decode(ids) == text
  pieces = tok.pieces("漢")
  assert pieces[-3:] == ["<0xE6>", "<0xBC>", "<0xA2>"]  # UTF-8 bytes of 漢


@pytest.mark.parametrize("model_type", tokenizer.MODEL_TYPES)
def test_training_is_deterministic(lines, model_type):
  options = SentencePieceOptions(vocab_size=500, model_type=model_type)
  a = train_sentencepiece(lines["en"] + lines["fr"], options)
  b = train_sentencepiece(list(lines["en"] + lines["fr"]), options)
  assert a.model_proto == b.model_proto


def test_cached_sentencepiece_reuses_the_file(lines, tmp_path, monkeypatch):
  options = SentencePieceOptions(vocab_size=400)
  first = tokenizer.cached_sentencepiece("en", lambda: lines["en"], options, tmp_path)
  models = sorted(tmp_path.glob("*.model"))
  assert [p.name[:3] for p in models] == ["en-"] and models[0].read_bytes() == first.model_proto

  def refuse(*args, **kwargs):
    raise AssertionError("retrained although the model is cached")

  monkeypatch.setattr(tokenizer, "train_sentencepiece", refuse)
  again = tokenizer.cached_sentencepiece("en", lambda: lines["en"], options, tmp_path)
  assert again.model_proto == first.model_proto
  monkeypatch.undo()
  tokenizer.cached_sentencepiece("en", lambda: lines["en"][:-1], options, tmp_path)  # other text: new model
  assert len(list(tmp_path.glob("*.model"))) == 2 and not list(tmp_path.glob("*.tmp"))


def test_special_ids_encode_to_one_id_each(multilingual):
  tok = multilingual
  assert [tok.sp.id_to_piece(i) for i in range(5)] == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  ids = tok.encode("[CLS] Der Fluss [SEP]la rivière[MASK] river")
  assert [i for i in ids if i < 5] == [2, 3, 4]
  assert [tok.sp.id_to_piece(i) for i in ids if i < 5] == ["[CLS]", "[SEP]", "[MASK]"]
  assert tok.decode(ids) == "Der Fluss la rivière river"  # specials decode to nothing


def test_multilingual_model_covers_every_language(lines, multilingual):
  tok = multilingual
  vocab = {tok.sp.id_to_piece(i) for i in range(tok.vocab_size)}
  texts = {lang: " ".join(lines[lang]) for lang in LANGS}
  for lang in LANGS:
    for text in lines[lang]:
      assert tok.decode(tok.encode(text)) == text
    others = " ".join(texts[o] for o in LANGS if o != lang)
    own = {p for p in vocab if len(p.strip("▁")) >= 4 and p.strip("▁") in texts[lang] and p.strip("▁") not in others}
    assert len(own) >= 15, (lang, sorted(own))  # pieces only this language's text contains
  counts = collections.Counter("".join(texts.values()))
  frequent = {c for c, n in counts.items() if n >= 10 and not c.isspace()}  # character_coverage drops rarer ones
  assert set("äüàèé") <= frequent and frequent <= vocab
  english_only = train_sentencepiece(lines["en"] * 3, SentencePieceOptions(vocab_size=1000))
  for lang in ("de", "fr"):  # a model trained on the language itself needs far fewer pieces for it
    assert len(tok.encode(texts[lang])) < 0.8 * len(english_only.encode(texts[lang]))


def test_byte_tokenizer(lines):
  tok = ByteTokenizer()
  assert tok.vocab_size == 261 and tok.offset == 5
  assert tok.encode("aé") == [5 + 0x61, 5 + 0xC3, 5 + 0xA9]
  for text in [*lines["fr"], UNSEEN, ""]:
    assert tok.decode(tok.encode(text)) == text
  assert tok.decode([2, 5 + 0x61, 0, 3, 4, 1]) == "a"  # special ids are dropped


@pytest.mark.parametrize(
  "field, value",
  [
    ("vocab_size", 8),
    ("vocab_size", 800.5),
    ("vocab_size", "8000"),
    ("model_type", "word"),
    ("character_coverage", 0.5),
    ("character_coverage", "all"),
    ("byte_fallback", "yes"),
    ("max_sentence_length", 0),
    ("input_sentence_size", -1),
  ],
)
def test_bad_options_name_the_field(field, value):
  with pytest.raises(ValueError, match=rf"^{field}=.*expected"):
    SentencePieceOptions(**{field: value})


def test_training_errors_are_value_errors(lines):
  with pytest.raises(ValueError, match="no text"):
    train_sentencepiece(["", "  "], SentencePieceOptions(vocab_size=400))
  with pytest.raises(ValueError, match="sentencepiece training failed"):
    train_sentencepiece(lines["de"], SentencePieceOptions(vocab_size=100))  # fewer than 256 byte pieces + chars


def test_save_load_and_load_errors(multilingual, tmp_path):
  path = multilingual.save(tmp_path / "sub" / "m.model")
  loaded = tokenizer.load(path)
  assert loaded.model_proto == multilingual.model_proto
  assert loaded.encode("Le café du coin") == multilingual.encode("Le café du coin")
  missing = tmp_path / "nope.model"
  with pytest.raises(FileNotFoundError, match=f"no sentencepiece model at {missing}.*research data tokenizer"):
    tokenizer.load(missing)
  (tmp_path / "junk.model").write_bytes(b"not a model")
  with pytest.raises(ValueError, match="junk.model is not a sentencepiece model"):
    tokenizer.load(tmp_path / "junk.model")
