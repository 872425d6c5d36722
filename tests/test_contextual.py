"""Contextual word features from rnnkit's own character LMs, in the tagger."""

import shutil
from pathlib import Path

import pytest
import torch

import rnnkit
import rnnkit.datasets
from rnnkit.nn.contextual import ContextualChars
from rnnkit.tasks import load_task
from tests.tiny import train_tiny


@pytest.fixture(scope="module")
def char_lms(tmp_path_factory) -> tuple:
    """A tiny forward and a tiny backward character LM on the same text."""
    root = tmp_path_factory.mktemp("char-lms")
    return (
        train_tiny("lm", root / "fwd"),
        train_tiny("lm", root / "bwd", "data.reverse=true"),
    )


def _features(module: ContextualChars, sentences: list[list[str]]) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(module.inputs(sentences))


def test_a_words_features_depend_on_its_context_and_only_on_the_right_side(char_lms):
    module = ContextualChars.load([str(d) for d in char_lms])
    a, b, c = (["the", "cat", "sat", "on", "the", "mat"], ["the", "dog", "sat", "on", "the", "mat"],
               ["the", "cat", "sat", "on", "a", "bone"])  # fmt: skip
    fa, fb, fc = _features(module, [a, b, c]).unbind(0)
    half = module.lms[0].encoder.output_size
    # "sat" (word 2): the forward half has read "the cat" or "the dog" before it.
    assert not torch.allclose(fa[2, :half], fb[2, :half])
    assert torch.allclose(fa[2, :half], fc[2, :half], atol=1e-6)  # same left side
    # The backward half has read the words after it: "on the mat" or "on a bone".
    assert torch.allclose(fa[2, half:], fb[2, half:], atol=1e-6)
    assert not torch.allclose(fa[2, half:], fc[2, half:])
    # The same word twice in one sentence gets two vectors.
    assert not torch.allclose(fa[0], fa[4])


def test_features_equal_the_lms_own_states_read_by_hand(char_lms):
    fwd, bwd = (load_task(d) for d in char_lms)
    module = ContextualChars.load([str(d) for d in char_lms])
    tokens = ["the", "cat", "sat"]
    got = _features(module, [tokens, ["a"]])[0]  # batched with a shorter sentence
    for task, half in ((fwd, got[:, :32]), (bwd, got[:, 32:])):
        for w in range(len(tokens)):
            if task.config.data.reverse:  # up to and including the word's first character
                seen = " ".join(tokens)[len(" ".join(tokens[:w])) + (w > 0) :][::-1]
            else:
                seen = " ".join(tokens[: w + 1])
            start = "\n" if "\n" in task.vocab else " "  # where lines begin, as generation
            ids = torch.tensor([task.vocab.encode([start, *seen])])
            with torch.no_grad():
                hidden, _ = task.model.eval()(ids)
            assert torch.allclose(half[w], hidden[0, -1], atol=1e-5)


@pytest.mark.parametrize("dim", [0, 6])
def test_tagger_with_contextual_features_reloads_from_its_own_directory(char_lms, tmp_path, dim):
    lms = tmp_path / "lms"
    shutil.copytree(char_lms[0], lms / "fwd")
    shutil.copytree(char_lms[1], lms / "bwd")
    from tests.test_tag import ner_overrides

    config = ner_overrides(
        tmp_path, f"model.contextual=[{lms / 'fwd'},{lms / 'bwd'}]", f"model.contextual_dim={dim}"
    )
    from rnnkit.cli import main

    out = tmp_path / "tagger"
    assert main(["train", "tag", "--out", str(out), *config]) == 0
    task = rnnkit.load(out)
    sentences = ["the man saw Elena Annason in Paris", "Zorro went to Oslo", ""]
    before = task.predict(sentences)
    metrics = task.evaluate("test")
    shutil.rmtree(lms)  # the tagger must not need them any more
    again = rnnkit.load(out)
    assert again.predict(sentences) == before
    assert again.evaluate("test") == metrics
    assert (out / "contextual.json").exists()
    # ONNX: the LMs run inside the graph, checked against PyTorch before it is written.
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "tagger.onnx")]) == 0
    frozen = [p for n, p in again.model.named_parameters() if n.startswith("contextual.")]
    assert frozen and not any(p.requires_grad for p in frozen)
    # The first layer reads the LMs' states as they are, or their learned map to `dim` floats.
    lm_width = again.model.contextual.output_size
    words_and_chars = again.model.embed.embedding_dim + again.model.chars.output_size
    first = again.model.encoder.rnn.weight_ih_l0.shape[1]
    assert first == words_and_chars + (dim or lm_width)
    mapped = again.model.reproject
    assert (mapped.weight.shape == (dim, lm_width)) if dim else not list(mapped.parameters())


def test_fine_tuning_moves_the_lm_weights(char_lms, tmp_path):
    from rnnkit.cli import main
    from tests.test_tag import ner_overrides

    out = tmp_path / "tagger"
    config = ner_overrides(
        tmp_path, f"model.contextual=[{char_lms[0]}]", "model.contextual_tune=true",
        "train.epochs=1",
    )  # fmt: skip
    assert main(["train", "tag", "--out", str(out), *config]) == 0
    tuned = rnnkit.load(out).model.contextual.lms[0].embed.weight
    original = load_task(char_lms[0]).model.embed.weight
    assert not torch.allclose(tuned, original)


CONLL03 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP I-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O

The DT B-NP O
European NNP I-NP I-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
on IN B-PP O
Thursday NNP B-NP O
it PRP B-NP O
disagreed VBD B-VP O
with IN B-PP O
German JJ B-NP I-MISC
advice NN I-NP O
. . O O

"""


def test_conll03_recipe_on_a_synthetic_file_of_its_format(char_lms, tmp_path):
    """IOB1 columns with -DOCSTART- lines, imported with `rnnkit data import`, trained with
    configs/conll03-ner.yaml (made tiny) and contextual features; answers come back in IOB1."""
    from rnnkit.cli import main

    source = tmp_path / "mine"
    source.mkdir()
    for name in ("eng.train", "eng.testa", "eng.testb"):
        (source / name).write_text(CONLL03 * 8)
    data = tmp_path / "data"
    assert main(["data", "import", "conll2003", str(source), "--data-dir", str(data)]) == 0
    rows = {r.name: r.status for r in rnnkit.datasets.list_datasets(data)}
    assert rows["conll2003"] == "present (no checksums to verify)"
    recipe = Path(__file__).parent.parent / "configs" / "conll03-ner.yaml"
    vectors = tmp_path / "vectors.txt"  # the recipe's skip-gram vectors, in miniature
    words = ["peter", "blackburn", "said", "on", "thursday"]
    vectors.write_text(f"{len(words)} 8\n" + "".join(f"{w}{' 0.1' * 8}\n" for w in words))
    out = tmp_path / "ner"
    assert main([
        "train", "tag", "--config", str(recipe), "--data-dir", str(data), "--out", str(out),
        f"model.contextual=[{char_lms[0]},{char_lms[1]}]", "model.embedding_dim=8",
        f"model.pretrained={vectors}",
        "model.char_dim=4", "model.char_hidden=4", "model.hidden_size=8", "train.epochs=2",
        "train.progress=false",
    ]) == 0  # fmt: skip
    task = rnnkit.load(out, data_dir=data)
    assert task.model_scheme == "BIOES" and task.file_scheme == "IOB1"
    assert set(task.labels()) >= {"S-PER", "E-ORG"}
    (result,) = task.predict(["Peter Blackburn said on Thursday"])
    assert all(tag == "O" or tag.startswith(("I-", "B-")) for tag in result["tags"])
    assert set(task.evaluate("test")) >= {"accuracy", "f1"}


def test_classifier_with_contextual_features_trains_and_reloads_alone(char_lms, tmp_path):
    from rnnkit.cli import main
    from tests.test_classify import tsv_overrides

    lm = tmp_path / "fwd"
    shutil.copytree(char_lms[0], lm)
    out = tmp_path / "classifier"
    config = tsv_overrides(
        tmp_path, f"model.contextual=[{lm}]", "model.contextual_dim=5", "train.epochs=2"
    )
    assert main(["train", "classify", "--out", str(out), *config]) == 0
    texts = ["a dog near the river", "", "nothing known here"]
    before = rnnkit.load(out).predict(texts)
    shutil.rmtree(lm)
    assert rnnkit.load(out).predict(texts) == before
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "c.onnx")]) == 0
    bad = tsv_overrides(tmp_path, f"model.contextual=[{char_lms[0]}]", "data.tokenize=chars")
    assert main(["train", "classify", "--out", str(tmp_path / "x"), *bad]) == 2


def test_a_backward_lm_reads_and_writes_right_to_left(char_lms, tmp_path):
    fwd, bwd = (load_task(d) for d in char_lms)
    assert bwd.tokens_of("cat.") == [".", "t", "a", "c"]
    (result,) = bwd.predict(["the mat."], length=12, temperature=0)
    assert len(result["text"]) == 12
    assert bwd.format("the mat.", result) == result["text"] + "the mat."
    assert "".join(bwd.stream("the mat.", length=12, temperature=0)) == result["text"]
    text = tmp_path / "t.txt"
    text.write_text("the dog ate the bone. the cat sat on the mat. " * 4)
    forward, backward = fwd.evaluate_file(text)["bpc"], bwd.evaluate_file(text)["bpc"]
    assert 0 < backward < 4 and 0 < forward < 4
