"""Translation: reading and splitting pairs, attention, search, BLEU, and the task end to end
on small generated data."""

import hashlib
import itertools
import json

import pytest
import sacrebleu
import torch
from torch.nn import functional as F

from rnnkit.config import from_dict
from rnnkit.data.parallel import (
    SEED_PREFIXES,
    group_references,
    keep_pair,
    normalise,
    read_pairs,
    reference_streams,
    split_of,
)
from rnnkit.errors import ConfigError, DataError
from rnnkit.metrics import corpus_scores
from rnnkit.nn.attention import Attention
from rnnkit.nn.search import beam_search, greedy_search
from rnnkit.nn.seq2seq import BOS_ID, EOS_ID, Seq2Seq, TranslateModelConfig
from rnnkit.tasks.translate import TranslateConfig, TranslateTask
from tests.conftest import run_cli

SUBJECTS = [("je suis", "i am"), ("il est", "he is"), ("elle est", "she is"),
            ("nous sommes", "we are"), ("vous etes", "you are"),
            ("ils sont", "they are")]  # fmt: skip
WORDS = [("fatigue", "tired"), ("content", "happy"), ("grand", "tall"), ("petit", "small"),
         ("malade", "sick"), ("pret", "ready"), ("triste", "sad"), ("riche", "rich"),
         ("en retard", "late"), ("occupe", "busy")]  # fmt: skip


CONTRACTED = {"i am": "i'm", "he is": "he's", "she is": "she's", "we are": "we're",
              "you are": "you're", "they are": "they're"}  # fmt: skip


def write_pairs(path, extra_columns=False):
    """English<TAB>French lines in the manythings layout: every subject × word, plain and with
    "very", each French sentence twice (English with and without a contraction), plus two
    lines that the seed's filter drops."""
    lines = []
    for (fr_s, en_s), (fr_w, en_w) in itertools.product(SUBJECTS, WORDS):
        for fr_v, en_v in (("", ""), ("tres ", "very ")):
            french = f"{fr_s.capitalize()} {fr_v}{fr_w}."
            for subject in (en_s, CONTRACTED[en_s]):
                lines.append(f"{subject.capitalize()} {en_v}{en_w}.\t{french}")
    lines.append("Go.\tVa !")  # no seed prefix
    lines.append("I am " + "very " * 10 + "tired.\tJe suis très fatigué.")  # too long
    if extra_columns:
        lines = [line + "\tCC-BY 2.0 (France) Attribution: tatoeba.org #1" for line in lines]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TINY = {
    "model": {
        "source_embedding_dim": 16,
        "target_embedding_dim": 16,
        "hidden_size": 16,
        "decoder_size": 16,
    },
    "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "progress": False},
}


# ------------------------------------------------------------------ reading
def test_normalise_follows_the_seed():
    assert normalise("Je suis fatigué.") == "je suis fatigue ."
    assert normalise("Cours\u202f!") == "cours !"
    assert normalise("I'm 20, OK?") == "i m ok ?"
    assert normalise("« Ça va ? »") == "ca va ?"
    assert normalise("Wait...") == "wait . . ."


def test_filter_and_direction(tmp_path):
    path = write_pairs(tmp_path / "pairs.txt", extra_columns=True)  # extra columns are ignored
    everything = read_pairs(path, reverse=True)
    assert len(everything) == 4 * len(SUBJECTS) * len(WORDS) + 2
    seed = read_pairs(path, reverse=True, max_words=10, prefixes=SEED_PREFIXES)
    assert len(seed) == 4 * len(SUBJECTS) * len(WORDS)
    assert seed[1].source == seed[0].source and seed[1].target == "i m tired ."
    assert seed[0].source == "je suis fatigue ." and seed[0].target == "i am tired ."
    forward = read_pairs(path, reverse=False, max_words=10, prefixes=SEED_PREFIXES)
    assert forward[0].source == "i am tired ."
    assert not keep_pair("i am a b c d e f g h", "x", max_words=10)  # 10 words: dropped
    assert keep_pair("i am a b c d e f g", "x", max_words=10, prefixes=["i am "])
    assert not keep_pair("go .", "va !", prefixes=SEED_PREFIXES)


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Go.\tVa !\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt:2: "):
        read_pairs(path)
    path.write_text("Go.\tVa !\n...\t!\n?!\tx\n", encoding="utf-8")
    read_pairs(path)  # punctuation survives normalisation
    path.write_text("Go.\tVa !\n123\tcent vingt-trois\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt:2: the first sentence is empty"):
        read_pairs(path)


def test_split_is_the_exact_hash_rule_and_does_not_leak(tmp_path):
    path = write_pairs(tmp_path / "pairs.txt")
    config = from_dict(TranslateConfig, {**TINY, "data": {"file": str(path)}})
    task = TranslateTask.build(config)
    seen = {}
    for split in ("train", "dev", "test"):
        for pair in task.pairs(split):
            bucket = int(hashlib.sha256(pair.source.encode("utf-8")).hexdigest(), 16) % 20
            assert split == {0: "test", 1: "dev"}.get(bucket, "train")
            assert seen.setdefault(pair.source, split) == split  # one split per source
    assert split_of("je suis fatigue .") in ("train", "dev", "test")
    assert sum(len(task.pairs(s)) for s in ("train", "dev", "test")) == 4 * 60
    assert len(seen) == 2 * 60 and all(task.pairs(s) for s in ("train", "dev", "test"))


# ---------------------------------------------------------------- attention
@pytest.mark.parametrize("kind", ["bahdanau", "dot", "general"])
def test_attention_gives_padding_exactly_zero_weight(kind):
    torch.manual_seed(1)
    attention = Attention(kind, 6, 6)
    memory = torch.randn(3, 7, 6)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [True] + [False] * 6])
    query = torch.randn(3, 4, 6)
    context, weights = attention(query, attention.keys(memory), memory, mask)
    assert weights.shape == (3, 4, 7) and context.shape == (3, 4, 6)
    assert torch.all(weights[~mask.unsqueeze(1).expand_as(weights)] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    garbage = memory.masked_fill(~mask.unsqueeze(-1), 1e4)  # padding content does not matter
    context2, weights2 = attention(query, attention.keys(garbage), garbage, mask)
    torch.testing.assert_close(context2, context)
    assert torch.equal(weights2, weights)
    long = torch.randn(1, 300, 6)  # any source length
    _, w = attention(query[:1], attention.keys(long), long, torch.ones(1, 300, dtype=torch.bool))
    assert w.shape == (1, 4, 300)


# ------------------------------------------------------------------- search
def tiny_model(targets, decoder_rnn="gru", attention="bahdanau", feed=True, seed=0):
    torch.manual_seed(seed)
    config = TranslateModelConfig(
        source_embedding_dim=8, target_embedding_dim=8, hidden_size=8, decoder_size=16,
        decoder_rnn=decoder_rnn,
        attention=attention, input_feeding=feed, dropout=0.0, encoder_rnn="lstm",
        decoder_layers=2 if decoder_rnn == "lstm" else 1,
    )  # fmt: skip
    config.validate()
    model = Seq2Seq(12, targets, config).eval()
    with torch.no_grad():  # sharper distributions than the initialisation gives
        model.decoder.out.weight.mul_(8.0)
    return model


def source_batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    source = torch.randint(4, 12, (len(lengths), width), generator=g)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    source = source.masked_fill(~mask, 0)
    source[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = EOS_ID
    return {"source": source, "source_mask": mask}


@pytest.mark.parametrize(
    "kind", [("gru", "bahdanau", True), ("gru", "general", True), ("lstm", "general", True)]
)
def test_teacher_forcing_in_one_call_equals_one_step_at_a_time(kind):
    model = tiny_model(20, *kind)
    batch = source_batch([5, 2, 7, 1, 3])
    inputs = torch.randint(3, 20, (5, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        state = model.start(batch)
        logits, weights = model.decoder(inputs, state)
        for t in range(inputs.shape[1]):
            step_logits, step_weights, state = model.decoder.step(inputs[:, t], state)
            torch.testing.assert_close(logits[:, t], step_logits)
            torch.testing.assert_close(weights[:, t], step_weights)


@pytest.mark.parametrize("kind", [("gru", "bahdanau", True), ("lstm", "general", False)])
def test_loss_scores_the_real_positions_of_the_full_logits(kind):
    """The loss runs the output layer on real positions only: the same numbers as the
    cross-entropy of the decoder's full logits at those positions."""
    model = tiny_model(20, *kind)
    batch = source_batch([5, 2, 7, 1, 3])
    g = torch.Generator().manual_seed(2)
    batch["target_in"] = torch.randint(3, 20, (5, 6), generator=g)
    batch["target_out"] = torch.randint(3, 20, (5, 6), generator=g)
    batch["target_mask"] = torch.arange(6).unsqueeze(0) < torch.tensor([6, 1, 4, 2, 5]).unsqueeze(1)
    with torch.no_grad():
        logits, _ = model.decoder(batch["target_in"], model.start(batch))
        mask = batch["target_mask"]
        expected = F.cross_entropy(logits[mask], batch["target_out"][mask])
        torch.testing.assert_close(model.loss(batch), expected)


@pytest.mark.parametrize("kind", [("gru", "bahdanau", True), ("lstm", "general", False)])
def test_greedy_equals_beam_of_one(kind):
    model = tiny_model(20, *kind)
    batch = source_batch([5, 2, 7, 1, 3])
    with torch.no_grad():
        state = model.start(batch)
        greedy = greedy_search(model.log_probs_step, state, BOS_ID, EOS_ID, 12, keep_attention=True)
        beam = beam_search(model.log_probs_step, state, BOS_ID, EOS_ID, 12, 1, alpha=0.7,
                           keep_attention=True)  # fmt: skip
    assert torch.equal(greedy.tokens, beam.tokens)
    assert torch.equal(greedy.lengths, beam.lengths)
    torch.testing.assert_close(greedy.scores, beam.scores)
    torch.testing.assert_close(greedy.attention, beam.attention)


@pytest.mark.parametrize("kind", [("gru", "bahdanau", True), ("lstm", "dot", False)])
def test_beam_search_finds_the_best_sequence_by_enumeration(kind):
    """Target vocabulary: 4 specials (never produced but </s>) + 3 words → 4 choices a step;
    max length 3. Every sequence is scored by teacher forcing; a beam of 16 (= 4²) keeps every
    prefix, so it must return the best of them all."""
    model = tiny_model(7, *kind)
    if kind[1] == "dot":  # dot needs the decoder as wide as the encoder outputs
        config = TranslateModelConfig(
            source_embedding_dim=8, target_embedding_dim=8, hidden_size=8, decoder_size=16,
            decoder_rnn="lstm",
            attention="dot", input_feeding=False, dropout=0.0,
        )  # fmt: skip
        torch.manual_seed(3)
        model = Seq2Seq(12, 7, config).eval()
        with torch.no_grad():
            model.decoder.out.weight.mul_(8.0)
    choices = [4, 5, 6, EOS_ID]
    sequences = [
        list(s) for n in (1, 2, 3) for s in itertools.product(choices, repeat=n)
        if EOS_ID not in s[:-1] and (s[-1] == EOS_ID or n == 3)
    ]  # fmt: skip
    assert len(sequences) == 1 + 3 + 9 + 27
    lengths = [4, 1, 6]
    for row, length in enumerate(lengths):
        one = source_batch(lengths, seed=5)
        one = {k: v[row : row + 1, :length] for k, v in one.items()}
        n = len(sequences)
        ins = [[BOS_ID, *s[:-1]] for s in sequences]
        outs = [s for s in sequences]
        width = 3
        batch = {k: v.expand(n, -1) for k, v in one.items()}
        batch["target_in"] = torch.tensor([x + [0] * (width - len(x)) for x in ins])
        batch["target_out"] = torch.tensor([x + [0] * (width - len(x)) for x in outs])
        batch["target_mask"] = batch["target_out"] != 0
        scores = model.sequence_scores(batch)
        best = int(scores.argmax())
        found = model.translate(one, beam=16, alpha=0.0, max_length=3)
        got = found.tokens[0, : int(found.lengths[0])].tolist()
        assert got == sequences[best], (got, sequences[best])
        torch.testing.assert_close(found.scores[0], scores[best], rtol=1e-5, atol=1e-5)
        greedy = model.translate(one, beam=1, max_length=3)
        assert float(greedy.scores[0]) <= float(scores[best]) + 1e-5


# ------------------------------------------------------------------- scores
def test_bleu_with_several_reference_streams():
    hyps = ["i am tired .", "he is tall .", "we are late ."]
    refs = [["i am very tired .", "i am tired ."], ["he is tall ."], ["we are late .", "x y ."]]
    assert reference_streams(refs) == [
        ["i am very tired .", "he is tall .", "we are late ."],
        ["i am tired .", "he is tall .", "x y ."],
    ]
    scores = corpus_scores(hyps, refs)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    only_first = sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs]], tokenize="13a").score
    assert only_first < 100.0
    # Padding by repeating a reference changes nothing.
    wrong = ["i am sad .", "he is small .", "we are ."]
    padded = sacrebleu.corpus_bleu(wrong, reference_streams(refs), tokenize="13a").score
    assert corpus_scores(wrong, refs)["bleu"] == pytest.approx(padded)
    from rnnkit.data.parallel import Pair

    found = [Pair(s, t, i) for i, (s, t) in enumerate([("a", "1"), ("b", "2"), ("a", "3")])]
    sources, grouped = group_references(found)
    assert sources == ["a", "b"] and grouped == [["1", "3"], ["2"]]


# --------------------------------------------------------------- end to end
def test_train_save_load_translate_through_the_cli(tmp_path):
    path = write_pairs(tmp_path / "pairs.txt")
    out = tmp_path / "model"
    overrides = [
        f"data.file={path}", "model.source_embedding_dim=16", "model.target_embedding_dim=16",
        "model.hidden_size=16", "model.decoder_size=16", "train.epochs=2",
        "train.batch_size=16", "train.progress=false", "train.autoencoder_epochs=1",
        "train.teacher_forcing=0.5", "decode.beam=3",
    ]  # fmt: skip
    done = run_cli("train", "translate", "--out", str(out), "--device", "cpu", *overrides)
    assert done.returncode == 0, done.stderr
    assert (out / "target.json").exists() and (out / "vocab.json").exists()
    sentences = ["Je suis fatigué.", "il est grand .", "nous sommes tres occupes ."]
    task = TranslateTask.from_dir(out)
    expected = [r["translation"] for r in task.predict(sentences)]
    png = tmp_path / "attention.png"
    shown = run_cli("translate", "--model", str(out), "--plot-attention", str(png), sentences[0])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == expected[:1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    piped = run_cli("translate", "--model", str(out), "--json", "-", stdin="\n".join(sentences))
    assert piped.returncode == 0, piped.stderr
    records = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["translation"] for r in records] == expected
    assert records[0]["source"] == "je suis fatigue ."
    scored = run_cli("eval", "--model", str(out), "--json")
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads(scored.stdout)
    assert set(metrics) == {"bleu", "chrf"} and 0 <= metrics["bleu"] <= 100
    assert metrics == pytest.approx(task.evaluate("test"))
    with_attention = task.predict(sentences[:1], beam=1, attention=True)[0]
    weights = torch.tensor(with_attention["attention"])
    assert weights.shape == (len(with_attention["target_tokens"]), 5)  # je suis fatigue . </s>
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]), atol=1e-4, rtol=0)
    bad = run_cli("translate", "--model", str(out), "--beam", "0", "x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_plot_attention_writes_png(tmp_path):
    from rnnkit.plots import plot_attention

    where = tmp_path / "map.png"
    plot_attention(["je", "suis", "</s>"], ["i", "am", "</s>"], torch.eye(3).tolist(), where)
    assert where.read_bytes()[:4] == b"\x89PNG"


def test_pretrained_embeddings_and_tied_target(tmp_path):
    from rnnkit.data.vectors import write_vectors

    path = write_pairs(tmp_path / "pairs.txt")
    vectors = tmp_path / "fr.vec"
    write_vectors(vectors, ["je", "suis"], torch.ones(2, 16))
    config = from_dict(
        TranslateConfig,
        {**TINY, "data": {"file": str(path)},
         "model": {**TINY["model"], "pretrained_source": str(vectors), "tie_target": True}},
    )  # fmt: skip
    task = TranslateTask.build(config)
    row = task.vocab.stoi["suis"]
    assert torch.equal(task.model.src_embed.weight[row], torch.ones(16))
    assert task.model.decoder.out.weight is task.model.decoder.embed.weight
    loss = task.model.loss(next(iter(task.train_batches(1))))
    assert torch.isfinite(loss)


def test_autoencoder_epochs_train_the_encoder_on_source_to_source_first(tmp_path):
    path = write_pairs(tmp_path / "pairs.txt")
    config = from_dict(
        TranslateConfig,
        {**TINY, "data": {"file": str(path)}, "train": {**TINY["train"], "autoencoder_epochs": 1}},
    )
    task = TranslateTask.build(config)
    batch = next(iter(task.train_batches(1)))
    assert batch["autoencode"]
    # the reconstruction target is the source itself: its words then </s>, in source ids
    assert torch.equal(batch["target_out"].masked_fill(~batch["target_mask"], 0),
                       batch["source"])  # fmt: skip
    assert not next(iter(task.train_batches(2)))["autoencode"]

    encoder = [p.detach().clone() for p in task.model.encoder.parameters()]
    decoder = [p.detach().clone() for p in task.model.decoder.parameters()]
    optimizer = torch.optim.SGD(task.model.parameters(), lr=0.5)
    task.model.train()
    task.model.loss(batch).backward()
    optimizer.step()
    # one autoencoder step moves the encoder and leaves the translation decoder alone
    moved = [
        not torch.equal(a, b) for a, b in zip(encoder, task.model.encoder.parameters(), strict=True)
    ]
    kept = [
        torch.equal(a, b) for a, b in zip(decoder, task.model.decoder.parameters(), strict=True)
    ]
    assert any(moved) and all(kept)

    plain = TranslateTask.build(from_dict(TranslateConfig, {**TINY, "data": {"file": str(path)}}))
    with pytest.raises(ConfigError, match="autoencoder_epochs"):
        plain.model.loss(batch)
