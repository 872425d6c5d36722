"""Classical ciphers over text, their batched twins in the cipher task, and cracking them."""

import json
import string
from pathlib import Path

import pytest
import torch

from rnnkit.cli import main
from rnnkit.crack import (
    CharScorer,
    chi_squared_shifts,
    coincidence,
    crack,
    frequency_key,
    guess_period,
    letter_accuracy,
)
from rnnkit.data.ciphers import (
    Letters,
    decipher,
    encipher,
    encipher_batch,
    frequency_ranks,
    parse_key,
)
from rnnkit.errors import ConfigError, DataError
from rnnkit.tasks import load_task

# A public-domain English text (the US Declaration of Independence, opening) to crack.
TEXT = (
    "When in the Course of human events, it becomes necessary for one people to dissolve the "
    "political bands which have connected them with another, and to assume among the powers "
    "of the earth, the separate and equal station to which the Laws of Nature and of Nature's "
    "God entitle them, a decent respect to the opinions of mankind requires that they should "
    "declare the causes which impel them to the separation. We hold these truths to be "
    "self-evident, that all men are created equal, that they are endowed by their Creator "
    "with certain unalienable Rights, that among these are Life, Liberty and the pursuit of "
    "Happiness. That to secure these rights, Governments are instituted among Men, deriving "
    "their just powers from the consent of the governed."
)


def _vigenere_by_hand(text: str, key: str) -> str:
    out, i = [], 0
    for ch in text:
        if ch.lower() in string.ascii_lowercase and ch.isascii():
            shift = ord(key[i % len(key)]) - ord("a")
            letter = chr((ord(ch.lower()) - ord("a") + shift) % 26 + ord("a"))
            out.append(letter.upper() if ch.isupper() else letter)
            i += 1
        else:
            out.append(ch)
    return "".join(out)


@pytest.mark.parametrize(
    ("cipher", "key"),
    [
        ("caesar", 3),
        ("caesar", "x"),
        ("vigenere", "lemon"),
        ("substitution", "qwertyuiopasdfghjklzxcvbnm"),
    ],
)
def test_known_key_round_trips_keep_case_and_everything_but_letters(cipher, key):
    secret = encipher(TEXT, cipher, key)
    assert decipher(secret, cipher, key) == TEXT
    assert len(secret) == len(TEXT)
    assert [c for c in secret if not c.isalpha()] == [c for c in TEXT if not c.isalpha()]
    assert [c.isupper() for c in secret] == [c.isupper() for c in TEXT]
    assert secret != TEXT


def test_vigenere_moves_its_key_on_letters_only_as_the_textbook_does():
    assert encipher("Attack at dawn!", "vigenere", "lemon") == "Lxfopv ef rnhr!"
    assert encipher(TEXT, "vigenere", "lemon") == _vigenere_by_hand(TEXT, "lemon")
    assert encipher(TEXT, "caesar", 3) == _vigenere_by_hand(TEXT, "d")


def test_bad_keys_are_refused_by_name():
    with pytest.raises(DataError, match="substitution key"):
        parse_key("substitution", "abc")
    with pytest.raises(DataError, match="vigenere key"):
        parse_key("vigenere", "le mon")


def test_the_batched_cipher_matches_the_text_cipher_message_by_message():
    letters = string.ascii_uppercase
    g = torch.Generator().manual_seed(0)
    plain = torch.randint(27, (5, 40), generator=g)  # 26 = the pass-through separator
    keys = torch.randint(26, (5, 8), generator=g)
    lengths = torch.tensor([1, 3, 8, 5, 2])
    out = encipher_batch(plain, "vigenere", keys, lengths, 26)
    perms = torch.rand(5, 26, generator=g).argsort(1)
    sub = encipher_batch(plain, "substitution", perms, torch.full((5,), 26), 26)
    for row in range(5):
        text = "".join((letters + "-")[i] for i in plain[row].tolist())
        key = "".join(letters[k] for k in keys[row, : lengths[row]].tolist())
        expected = encipher(text, "vigenere", key)
        assert "".join((letters + "-")[i] for i in out[row].tolist()) == expected
        table = "".join(letters[k] for k in perms[row].tolist())
        expected = encipher(text, "substitution", table)
        assert "".join((letters + "-")[i] for i in sub[row].tolist()) == expected


def test_frequency_ranks_by_brute_force():
    g = torch.Generator().manual_seed(1)
    cipher = torch.randint(27, (4, 30), generator=g)
    mask = torch.ones_like(cipher, dtype=torch.bool)
    mask[2, 20:] = False
    ranks = frequency_ranks(cipher, mask, 26)
    for row in range(4):
        seen = [c for c, m in zip(cipher[row].tolist(), mask[row].tolist(), strict=True) if m]
        counts = {c: seen.count(c) for c in range(26)}
        first = {c: seen.index(c) if c in seen else 99 for c in range(26)}
        order = sorted(range(26), key=lambda c: (-counts[c], first[c]))
        for t, c in enumerate(cipher[row].tolist()):
            if mask[row, t]:
                assert ranks[row, t] == (order.index(c) if c < 26 else c)
    # Two messages under different keys re-code to the same symbols.
    text = "the quick brown fox jumps over the lazy dog and then some more text"
    a = Letters(encipher(text, "substitution", "qwertyuiopasdfghjklzxcvbnm")).values
    b = Letters(encipher(text, "substitution", "mnbvcxzlkjhgfdsapoiuytrewq")).values
    full = torch.ones(1, len(a), dtype=torch.bool)
    assert torch.equal(frequency_ranks(a[None], full, 26), frequency_ranks(b[None], full, 26))


def test_classical_statistics():
    values = Letters(TEXT).values
    assert 0.06 < coincidence(values) < 0.075  # English
    secret = Letters(encipher(TEXT, "vigenere", "lemon")).values
    assert coincidence(secret) < 0.05  # flattened by the key
    assert guess_period(secret, 8) == 5
    assert "".join(chr(97 + s) for s in chi_squared_shifts(secret, 5).tolist()) == "lemon"
    assert frequency_key(values)[4] == 4  # e is the commonest letter of both


def test_classical_crack_without_an_lm():
    result = crack(encipher(TEXT, "vigenere", "lemon"), "vigenere", method="classical")
    assert result.key == "lemon" and result.plaintext == TEXT and result.period == 5
    result = crack(encipher(TEXT, "caesar", 7), "caesar", method="classical")
    assert result.key == "h" and result.plaintext == TEXT
    with pytest.raises(ConfigError, match="needs a character LM"):
        crack(TEXT, "vigenere")
    with pytest.raises(DataError, match="no letters"):
        crack("12345 !?", "caesar", method="classical")


def test_letter_accuracy_counts_letters_only():
    assert letter_accuracy("Hxllo, world", "Hello, world") == pytest.approx(9 / 10)


def test_crack_command_classical(capsys):
    assert main(["crack", "--cipher", "caesar", "--method", "classical", "--json",
                 encipher(TEXT, "caesar", 11)]) == 0  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert answer["plaintext"] == TEXT and answer["key"] == "l"
    assert main(["crack", "--cipher", "caesar", "Uryyb"]) == 2
    assert "needs a character LM" in capsys.readouterr().err


# ------------------------------------------------------------------ search with a real LM
ENGLISH = Path(__file__).parent / "data" / "english.txt"


@pytest.fixture(scope="module")
def english_lm(tmp_path_factory) -> Path:
    """A small character LM trained on all but the last paragraph of an English text."""
    root = tmp_path_factory.mktemp("english-lm")
    paragraphs = ENGLISH.read_text().split("\n\n")
    (root / "train.txt").write_text("\n\n".join(paragraphs[:-1]))
    (root / "valid.txt").write_text(paragraphs[-2])
    out = root / "model"
    assert main([
        "train", "lm", "--out", str(out), f"data.train={root / 'train.txt'}",
        f"data.dev={root / 'valid.txt'}", "data.bptt=64", "model.embedding_dim=16",
        "model.hidden_size=96", "model.layers=1", "model.dropout=0", "train.batch_size=8",
        "train.epochs=40", "train.lr=0.01", "train.progress=false",
    ]) == 0  # fmt: skip
    return out


def _held_out() -> str:
    return " ".join(ENGLISH.read_text().split("\n\n")[-1].split())


@pytest.mark.parametrize(("cipher", "key"), [("vigenere", "rnnkit"), ("caesar", "q")])
def test_the_search_recovers_the_key_of_a_long_message_exactly(english_lm, cipher, key):
    scorer = CharScorer(load_task(english_lm))
    message = _held_out()
    result = crack(encipher(message, cipher, key), cipher, scorer)
    assert result.key == key and result.plaintext == message
    assert result.score < 0


def test_the_search_breaks_a_substitution_the_classical_floor_does_not(english_lm):
    # A paragraph the small LM has read: its 96 units learn too little English to tell the
    # right key of an unseen one (the held-out figures with a real LM are in docs/cipher.md),
    # and here only the search is under test.
    scorer = CharScorer(load_task(english_lm))
    # Calibrated on what the small LM reads as real text (it learnt this file nearly by heart,
    # the paragraph below included).
    calibration = scorer.calibrate(ENGLISH.read_text(), length=128, windows=8)
    assert calibration is scorer.calibration and calibration.spread > 0
    message = " ".join(ENGLISH.read_text().split("\n\n")[4].split())
    table = "qwertyuiopasdfghjklzxcvbnm"
    secret = encipher(message, "substitution", table)
    found = crack(secret, "substitution", scorer)
    assert found.plaintext == message
    assert found.confidence is not None and not found.low_confidence  # solved, and says so
    assert 0.5 <= found.confidence.value <= 1 and found.as_dict()["low_confidence"] is False
    floor = crack(secret, "substitution", method="classical")
    assert letter_accuracy(floor.plaintext, message) < 0.8
    # The key names the cipher letter of every plaintext letter the message holds.
    for ch in {ch for ch in message.lower() if ch in string.ascii_lowercase}:
        assert found.key[ord(ch) - 97] == table[ord(ch) - 97]


def test_crack_command_with_an_lm(english_lm, capsys):
    secret = encipher(_held_out(), "vigenere", "key")
    assert main(["crack", "--cipher", "vigenere", "--lm", str(english_lm), secret]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == _held_out()
    assert captured.err.startswith("key: key (period 3), score -")
    assert ", confidence " in captured.err
    dev = ENGLISH  # the text to calibrate the confidence on (it takes any text)
    assert main(["crack", "--cipher", "vigenere", "--lm", str(english_lm), "--json",
                 "--dev", str(dev), secret]) == 0  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert answer["key"] == "key" and isinstance(answer["low_confidence"], bool)
    assert 0 <= answer["confidence"] <= 1 and isinstance(answer["excess"], float)
    assert main(["crack", "--cipher", "vigenere", "--lm", str(ENGLISH.parent), "x"]) == 2


# ------------------------------------------------------- end-to-end models, unknown keys
def test_end_to_end_substitution_model_through_the_task_contract(tmp_path):
    """A frequency-rank model trains, evaluates, saves and predicts like every task; its
    predictions do not depend on the key (the re-coding hides it)."""
    import rnnkit
    from tests.tiny import train_tiny

    text = tmp_path / "text.txt"
    text.write_text(ENGLISH.read_text())
    model = train_tiny(
        "cipher", tmp_path, "data.cipher=substitution", "data.key=random",
        "data.passthrough='-'", "data.recode=frequency", "data.source=text",
        f"data.text_file={text}", "data.min_length=48", "data.max_length=64",
        "data.train_messages=512", "data.eval_messages=64", "train.epochs=2",
    )  # fmt: skip
    task = rnnkit.load(model)
    metrics = task.evaluate("test")
    assert 0 <= metrics["letter_accuracy"] <= metrics["char_accuracy"] <= 1
    plain = "THE-RIVER-RUNS-PAST-THE-OLD-MILL-AND-UNDER-THE-STONE-BRIDGE"
    keys = ("qwertyuiopasdfghjklzxcvbnm", "mnbvcxzlkjhgfdsapoiuytrewq")
    secrets = [encipher(plain, "substitution", key) for key in keys]
    first, second = task.predict(secrets)
    assert first == second and len(first["plaintext"]) == len(plain)
    assert [c == "-" for c in first["plaintext"]] == [c == "-" for c in plain]
    assert rnnkit.load(model).predict(secrets) == [first, second]


def test_end_to_end_vigenere_passes_separators_through(tmp_path):
    from rnnkit.tasks.cipher import CipherTask
    from tests.tiny import train_tiny

    model = train_tiny(
        "cipher", tmp_path, "data.cipher=vigenere", "data.key=fixed", "data.keyword=KEY",
        "data.passthrough='-'",
    )  # fmt: skip
    task = CipherTask.from_dir(model)
    generator = torch.Generator().manual_seed(0)
    batch = task.make_batch(task.source("train"), 4, generator)
    for source, target in zip(batch["source"], batch["target"], strict=True):
        plain = "".join(task.alphabet[i - 1] for i in target.tolist())
        cipher = "".join(task.alphabet[i - 1] for i in source.tolist())
        assert cipher == encipher(plain, "vigenere", "key")


def test_a_long_ciphertext_is_searched_on_its_head_and_deciphered_whole(english_lm):
    from rnnkit.crack import SEARCH_WINDOW

    scorer = CharScorer(load_task(english_lm))
    long = " ".join(ENGLISH.read_text().split())
    assert len(long) > SEARCH_WINDOW
    result = crack(encipher(long, "vigenere", "kit"), "vigenere", scorer)
    assert result.key == "kit" and result.plaintext == long


def test_the_answer_is_flagged_low_confidence_on_a_text_the_search_cannot_solve(english_lm):
    scorer = CharScorer(load_task(english_lm))
    scorer.calibrate(ENGLISH.read_text(), length=128, windows=8)
    # Random letters: no key makes English of them, and the answer says so.
    rng = torch.Generator().manual_seed(3)
    noise = "".join(string.ascii_lowercase[i] for i in torch.randint(26, (80,), generator=rng))
    noise = " ".join(noise[i : i + 5] for i in range(0, len(noise), 5))
    lost = crack(noise, "substitution", scorer)
    assert lost.low_confidence and lost.confidence is not None and lost.confidence.value < 0.5
    answer = lost.as_dict()
    assert answer["low_confidence"] is True and 0 <= answer["confidence"] < 0.5
    assert answer["excess"] > scorer.calibration.excess
    assert crack(noise, "substitution", method="classical").confidence is None
