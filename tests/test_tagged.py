"""Readers of tagged data (CoNLL-U, column files), entity schemes, word-vector files."""

import random

import pytest
import torch

from rnnkit.data.tagged import convert, from_spans, read_columns, read_conllu, spans
from rnnkit.data.vectors import initialise_embedding, read_vectors, write_vectors
from rnnkit.errors import DataError

CONLLU = """\
# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tit\tit\tPRON\tPRP\t_\t_\t_\t4:obj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_

"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_conllu_keeps_words_only_and_picks_the_column(tmp_path):
    path = write(tmp_path, "a.conllu", CONLLU)
    first, second = read_conllu(path)
    assert first.tokens == ["I", "do", "n't", "know", "."]  # no "don't", no empty node "it"
    assert first.tags == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert first.line == 1 and second.line == 11
    assert read_conllu(path, "xpos")[0].tags == ["PRP", "VBP", "RB", "VB", "."]
    assert second.tokens == ["Yes"] and second.tags == ["INTJ"]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("3\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_", "expected 10 tab-separated fields, found 9"),
        ("7\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_", "bad word id '7' (expected 3)"),
        ("3\tn't\tnot\t_\tRB\t_\t3\tadvmod\t_\t_", "has no UPOS tag"),
    ],
)
def test_conllu_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    text = CONLLU.replace("3\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_", bad_line)
    path = write(tmp_path, "bad.conllu", text)
    with pytest.raises(DataError) as err:
        read_conllu(path)
    assert f"{path}:6:" in str(err.value) and message in str(err.value)


COLUMNS = """\
-DOCSTART- -X- -X- O

# a comment
EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_columns_skip_docstart_and_comments_and_count_from_the_end(tmp_path):
    path = write(tmp_path, "a.txt", COLUMNS)
    first, second = read_columns(path, token_column=0, tag_column=-1, scheme="IOB2")
    assert first.tokens == ["EU", "rejects", "German"] and first.tags == ["B-ORG", "O", "B-MISC"]
    assert first.line == 4 and second.line == 8
    assert second.tags == ["B-PER", "I-PER"]
    assert read_columns(path, 0, 1)[0].tags == ["NNP", "VBZ", "JJ"]


def test_hash_tokens_inside_a_sentence_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff-DOCSTART- O\n\n# comment\nwe O\n# O\nwon O\n".encode())
    (sentence,) = read_columns(path)
    assert sentence.tokens == ["we", "#", "won"]


def test_uner_style_tab_columns(tmp_path):
    text = "# sent_id = x\n1\tNew\tB-LOC\t-\tann\n2\tYork\tI-LOC\t-\tann\n\n"
    (sentence,) = read_columns(write(tmp_path, "u.iob2", text), 1, 2, "\t", scheme="IOB2")
    assert sentence.tokens == ["New", "York"] and sentence.tags == ["B-LOC", "I-LOC"]


def test_columns_malformed_and_invalid_tags(tmp_path):
    path = write(tmp_path, "short.txt", "EU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"short.txt:2: expected 4 columns like the first token"):
        read_columns(path, 0, 3)
    path = write(tmp_path, "wide.txt", "New B-LOC\nNew York B-LOC\n")
    with pytest.raises(DataError, match=r"wide.txt:2: expected 2 columns"):
        read_columns(path)
    path = write(tmp_path, "one.txt", "The\ndog\n")  # no tag column: not tag = token
    with pytest.raises(DataError, match=r"one.txt:1: token column 0 and tag column -1 are the"):
        read_columns(path)
    assert read_columns(path, 0, 0)[0].tokens == ["The", "dog"]  # tokens only, on purpose
    path = write(tmp_path, "tags.txt", "EU B-ORG\nsays X-PER\n")
    with pytest.raises(DataError, match=r"tags.txt:2: tag 'X-PER' is not valid IOB2"):
        read_columns(path, 0, 1, scheme="IOB2")
    with pytest.raises(DataError, match=r"tags.txt:2: tag 'X-PER' is not valid BIOES"):
        read_columns(path, 0, 1, scheme="BIOES")


def test_scheme_examples():
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-ORG"]
    assert convert(iob2, "IOB2", "IOB1") == [
        "I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "O", "I-ORG",
    ]  # fmt: skip
    assert convert(iob2, "IOB2", "BIOES") == [
        "B-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC", "O", "S-ORG",
    ]  # fmt: skip
    # conlleval's reading: a stray I- after O begins an entity.
    assert spans(["O", "I-PER", "I-PER", "I-LOC"], "IOB2") == [(1, 3, "PER"), (3, 4, "LOC")]


def random_entities(rng, length):
    entities, i = [], 0
    while i < length:
        if rng.random() < 0.4:
            size = rng.randint(1, min(3, length - i))
            entities.append((i, i + size, rng.choice("AB")))
            i += size
        else:
            i += rng.randint(0, 2) + 1 if rng.random() < 0.5 else 1
    return entities


def test_schemes_round_trip_on_random_entities():
    rng = random.Random(0)
    for _ in range(500):
        length = rng.randint(1, 9)
        entities = random_entities(rng, length)
        for scheme in ("IOB1", "IOB2", "BIOES"):
            tags = from_spans(entities, length, scheme)
            assert spans(tags, scheme) == sorted(entities), (scheme, tags)
            for other in ("IOB1", "IOB2", "BIOES"):
                assert convert(convert(tags, scheme, other), other, scheme) == tags


def test_word_vectors_both_formats_and_errors(tmp_path):
    words, vectors = ["king", "queen", "Paris"], torch.tensor([[1.0, 2.0], [3.0, 4.5], [0, -1]])
    w2v = tmp_path / "v.txt"
    write_vectors(w2v, words, vectors)
    assert w2v.read_text().startswith("3 2\n")
    got_words, got = read_vectors(w2v)
    assert got_words == words and torch.equal(got, vectors)
    glove = write(tmp_path, "g.txt", "king 1 2\nqueen 3 4.5\n. . . 5 6\n")
    assert read_vectors(glove, wanted={"queen"})[0] == ["queen"]
    assert read_vectors(glove)[0] == ["king", "queen", ". . ."]  # GloVe 840B has such words
    bad = write(tmp_path, "bad.txt", "king 1 2\nqueen 3\n")
    with pytest.raises(DataError, match=r"bad.txt:2: vector has 1 numbers, expected 2"):
        read_vectors(bad)


def test_pretrained_initialisation_counts_found_and_missing(tmp_path):
    path = tmp_path / "v.txt"
    write_vectors(path, ["king", "Paris"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    weight = torch.zeros(5, 2)
    found, missing = initialise_embedding(weight, ["<pad>", "<unk>", "king", "paris", "x"], path, 2)
    assert found == 2 and missing == ["x"]  # "paris" matches "Paris"
    assert weight[3].tolist() == [3.0, 4.0] and weight[0].tolist() == [0.0, 0.0]
    with pytest.raises(DataError, match="vectors have 2 dimensions"):
        initialise_embedding(torch.zeros(5, 3), ["<pad>", "<unk>", "king"], path, 2)
