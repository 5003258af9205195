"""WordPiece tokenizer: training, round trip, fixed lengths, left truncation, Spark tokenisation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from propensity.models.tokenizer import SPECIAL_TOKENS, encode, load_tokenizer, tokenize_column, train_tokenizer

TEXTS = [
    "[shop] view electronics.smartphone samsung p5 [shop] cart electronics.smartphone samsung p5"
    " +1d [app] ad_impression c2904146 nivea p2 +4d <target:shop>",
    "[app] view apparel.shoes nike p3 +2h [app] favorite apparel.shoes nike p3 +12h <target:app>",
    "[market] view furniture.sofa ikea p6 +1w [market] purchase furniture.sofa ikea p6 +0m <target:market>",
    "[shop] view computers.notebook lenovo p7 +30m [app] view computers.notebook lenovo p7 +2d <target:app>",
]
TITLES = ["Samsung Galaxy S24 smartphone 128GB", "Nike Air Zoom running shoes"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(TEXTS * 5 + TITLES, vocab_size=300, out_dir=tmp_path_factory.mktemp("tok") / "tokenizer")


def test_vocabulary_keeps_the_words_of_the_format(tokenizer_dir: Path) -> None:
    assert (tokenizer_dir / "tokenizer.json").is_file()
    tok = load_tokenizer(tokenizer_dir)
    assert load_tokenizer(tokenizer_dir / "tokenizer.json").get_vocab() == tok.get_vocab()
    assert [tok.convert_ids_to_tokens(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 2, 3, 4)
    pieces = tok.tokenize(TEXTS[0])
    for word in ("[shop]", "electronics.smartphone", "+1d", "p5", "<target:shop>", "ad_impression"):
        assert word in pieces
    assert tok.unk_token not in tok.tokenize("[outlet] view unseen.category zzbrand c99887766 p9 +4w <target:outlet>")


def test_round_trip_and_fixed_lengths(tokenizer_dir: Path) -> None:
    tok = load_tokenizer(tokenizer_dir)
    for text in [*TEXTS, "samsung galaxy s24 smartphone 128gb"]:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text.lower()
    ids, mask = encode(tok, [TEXTS[0], "p3", ""], max_length=12)
    assert ids.shape == mask.shape == (3, 12)
    assert mask.tolist() == [[1] * 12, [1, 1, 1] + [0] * 9, [1, 1] + [0] * 10]
    assert ids[1].tolist()[3:] == [tok.pad_token_id] * 9
    # left truncation keeps the newest events and the target
    kept = str(tok.decode(ids[0].tolist(), skip_special_tokens=True))
    assert TEXTS[0].endswith(kept) and kept.endswith("+4d <target:shop>")
    assert ids[0][0] == tok.cls_token_id and ids[0][-1] == tok.sep_token_id
    with pytest.raises(ValueError, match="max_length"):
        encode(tok, ["p3"], max_length=2)


def test_tokenize_column_matches_the_tokenizer(spark: SparkSession, tokenizer_dir: Path) -> None:
    rows = [(i, t) for i, t in enumerate([*TEXTS, None])]
    df = spark.createDataFrame(rows, "id INT, behavior_text STRING").repartition(2)
    out = tokenize_column(df, str(tokenizer_dir), max_length=16)
    assert dict(out.dtypes)["input_ids"] == "array<int>" and dict(out.dtypes)["attention_mask"] == "array<int>"
    got = {r["id"]: (r["input_ids"], r["attention_mask"]) for r in out.collect()}
    ids, mask = encode(load_tokenizer(tokenizer_dir), [t or "" for _, t in rows], max_length=16)
    assert got == {i: (ids[i].tolist(), mask[i].tolist()) for i, _ in rows}
    with pytest.raises(ValueError, match="not a column"):
        tokenize_column(df, str(tokenizer_dir), 16, text_col="nope")
    with pytest.raises(FileNotFoundError):
        tokenize_column(df, str(tokenizer_dir.parent / "missing"), 16)
