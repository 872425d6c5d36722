import pytest
import torch

from rnnkit.data.ciphers import (
    SEED_ALPHABET,
    RandomSymbols,
    TextWindows,
    apply_key,
    encrypt_text,
    normalise,
)
from rnnkit.errors import DataError
from rnnkit.tasks.cipher import CipherConfig, CipherTask


def test_rot13_of_the_whole_alphabet():
    assert encrypt_text(SEED_ALPHABET, 13) == "NOPQRSTUVWXYZ-ABCDEFGHIJKLM"


def test_the_seeds_example_both_ways():
    assert encrypt_text("THIS-IS-A-SECRET", 13) == "FUVEMVEMNMERPDRF"
    assert encrypt_text("FUVEMVEMNMERPDRF", 27 - 13) == "THIS-IS-A-SECRET"  # 27 symbols


def _vigenere_by_hand(text: str, keyword: str, alphabet: str) -> str:
    n = len(alphabet)
    return "".join(
        alphabet[(alphabet.index(c) + alphabet.index(keyword[i % len(keyword)])) % n]
        for i, c in enumerate(text)
    )


def test_vigenere_matches_the_textbook_formula_and_inverts():
    text = "ATTACK-AT-DAWN-ON-THE-EASTERN-FRONT"
    assert encrypt_text(text, "LEMON") == _vigenere_by_hand(text, "LEMON", SEED_ALPHABET)
    inverse = "".join(SEED_ALPHABET[-SEED_ALPHABET.index(ch) % 27] for ch in "LEMON")
    assert encrypt_text(encrypt_text(text, "LEMON"), inverse) == text


def test_apply_key_handles_a_batch_of_different_key_lengths():
    g = torch.Generator().manual_seed(3)
    plain = torch.randint(27, (4, 11), generator=g)
    keys = torch.randint(27, (4, 5), generator=g)
    lengths = torch.tensor([1, 2, 5, 3])
    cipher = apply_key(plain, keys, lengths, 27)
    for row in range(4):
        key = keys[row, : lengths[row]].tolist()
        expected = [(p + key[t % len(key)]) % 27 for t, p in enumerate(plain[row].tolist())]
        assert cipher[row].tolist() == expected
    assert torch.equal(apply_key(cipher, keys, lengths, 27, sign=-1), plain)


def test_normalise_maps_foreign_characters_and_case():
    assert normalise("Hi, you!", SEED_ALPHABET, "-") == "HI--YOU-"
    assert normalise("Hi, you!", SEED_ALPHABET, "-", collapse=True) == "HI-YOU-"
    assert normalise("", SEED_ALPHABET, "-") == ""


def test_characters_outside_the_alphabet_are_refused_by_the_exact_cipher():
    with pytest.raises(DataError, match="not in the alphabet"):
        encrypt_text("abc", 3)


def test_text_windows_keep_training_and_held_out_text_apart(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("AAAA " * 90 + "ZZZZ " * 10)
    train = TextWindows.from_file(path, SEED_ALPHABET, "-", (0.0, 0.9))
    held = TextWindows.from_file(path, SEED_ALPHABET, "-", (0.9, 1.0))
    z = SEED_ALPHABET.index("Z")
    assert z not in train.stream.tolist() and z in held.stream.tolist()
    g = torch.Generator().manual_seed(0)
    windows = held.sample(50, 8, g)
    assert windows.shape == (50, 8) and int(windows.max()) < 27


def test_random_symbols_are_uniform_over_the_alphabet():
    sample = RandomSymbols(27).sample(2000, 32, torch.Generator().manual_seed(0))
    counts = torch.bincount(sample.flatten(), minlength=27).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_generated_pairs_are_real_encryptions():
    config = CipherConfig()
    config.data.min_length, config.data.max_length = 5, 12
    task = CipherTask.build(config)
    batch = task.make_batch(task.source("train"), 64, torch.Generator().manual_seed(0))
    mask = batch["mask"]
    assert mask.sum(1).min() >= 5 and mask.sum(1).max() <= 12
    for src, tgt, m in zip(batch["source"], batch["target"], mask, strict=True):
        cipher = "".join(SEED_ALPHABET[i - 1] for i in src[m].tolist())
        plain = "".join(SEED_ALPHABET[i - 1] for i in tgt[m].tolist())
        assert encrypt_text(plain, 13) == cipher
        assert (src[~m] == 0).all() and (tgt[~m] == 0).all()


def test_random_keys_differ_per_message_and_vigenere_lengths_stay_in_range():
    config = CipherConfig()
    config.data.cipher, config.data.key, config.data.max_key_length = "vigenere", "random", 4
    task = CipherTask.build(config)
    keys, lengths = task.keys(500, torch.Generator().manual_seed(0))
    assert keys.shape == (500, 4)
    assert lengths.min() == 1 and lengths.max() == 4
    assert len({tuple(k) for k in keys.tolist()}) > 400


def test_held_out_messages_do_not_depend_on_the_batch_size():
    config = CipherConfig()
    config.data.key, config.data.min_length = "random", 16
    small, big = CipherConfig(), config
    small.data.key, small.data.min_length = "random", 16
    small.train.batch_size, big.train.batch_size = 16, 256
    a = torch.cat([b["source"] for b in CipherTask.build(small).heldout_batches("test")])
    b = torch.cat([b["source"] for b in CipherTask.build(big).heldout_batches("test")])
    assert torch.equal(a, b)
