"""Contextual word features from rnnkit's own character LMs, in the tagger."""

import shutil

import pytest
import torch

import rnnkit
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


def test_tagger_with_contextual_features_reloads_from_its_own_directory(char_lms, tmp_path):
    lms = tmp_path / "lms"
    shutil.copytree(char_lms[0], lms / "fwd")
    shutil.copytree(char_lms[1], lms / "bwd")
    from tests.test_tag import ner_overrides

    config = ner_overrides(tmp_path, f"model.contextual=[{lms / 'fwd'},{lms / 'bwd'}]")
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
    frozen = [p for n, p in again.model.named_parameters() if n.startswith("contextual.")]
    assert frozen and not any(p.requires_grad for p in frozen)


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
