"""ONNX export (rnnkit/export.py, each task's onnx_plan): graphs run in onnxruntime vs PyTorch.

Largest absolute differences from PyTorch seen on the tiny models (torch 2.13 CPU,
onnxruntime 1.32), each asserted below to be at most 1e-4:

    cipher 1.9e-06, cipher (2-layer BiLSTM) 2.9e-06, tag (CRF) 9.5e-07, tag (softmax, CNN
    chars) 9.5e-07, classify 1.1e-08, classify (bag of n-grams) 6.0e-08, lm 9.5e-07 over 20
    greedy steps, translate 4.8e-07 and translate (LSTM, dot attention) 4.8e-07 over a greedy
    search

Decoded ids (cipher, tags) and greedy choices (lm, translate) are identical.
"""

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.data.batching import pad
from rnnkit.data.ciphers import normalise as normalise_cipher
from rnnkit.data.parallel import normalise as normalise_french
from rnnkit.data.vocab import PAD, UNK
from rnnkit.errors import RnnkitError
from rnnkit.nn import encoder
from rnnkit.nn.crf import CRF, bio_constraints, scripted_viterbi
from rnnkit.nn.encoder import reverse_within

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from rnnkit import export  # noqa: E402  (after the skip: it needs onnx to export)

LIMIT = 1e-4

# Variants trained here besides the session's tiny models: (task, overrides).
VARIANTS = {
    "cipher-bidirectional": ("cipher", ["model.bidirectional=true", "model.layers=2"]),
    "tag-softmax": ("tag", ["model.head=softmax", "model.chars=cnn"]),
    "classify-bow": (
        "classify", ["model.kind=bow", "model.ngram_max=2", "model.features=tfidf", "model.norm=l2"]
    ),
    "translate-lstm": (
        "translate", ["model.encoder_rnn=lstm", "model.decoder_rnn=lstm", "model.attention=dot",
                      "model.decoder_size=32", "model.input_feeding=false"],
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> dict:
    """Model directories by name: the session's tiny models and the variants above."""
    from tests.tiny import train_tiny

    root = tmp_path_factory.mktemp("export-variants")
    found = dict(tiny_models)
    for name, (task, extra) in VARIANTS.items():
        found[name] = train_tiny(task, root / name, *extra)
    return found


def session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, **feeds) -> dict:
    names = [o.name for o in sess.get_outputs()]
    arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in feeds.items()}
    return dict(zip(names, sess.run(names, arrays), strict=True))


def diff(got: np.ndarray, want: torch.Tensor) -> float:
    return export.max_abs_diff(got, want.detach().numpy())


# Fresh inputs: other texts, batch sizes and lengths than the export's own check used.
CIPHERS = ["FUVEMVEMNMERPDRF", "URYYB-JBEYQ", "N", "GUVF-VF-N-ZHPU-YBATRE-ZRFFNTR-GB-QRPELCG"]
SENTENCES = [
    "the man saw Elena Annason in Paris yesterday",
    "Zorro went to Oslo",
    "Paris",
    "we went to Lima and then Anna Faridson left",
]
TEXTS = ["a dog near the river", "nothing known here", "cat", "the cat and the dog by the sea"]
FRENCH = ["je suis fatigue .", "il est tres grand .", "nous sommes contents .", "elle est petite ."]


def fresh_parity(name: str, task, path) -> tuple[float, bool | None]:
    """(largest |ONNX - PyTorch| of the float outputs, decoded ids equal) on a fresh batch,
    the ids also checked against the task's own predict."""
    sess = session(path)
    if task.name == "cipher":
        ids, mask = pad(
            [task.vocab.encode(normalise_cipher(t, task.alphabet, "-")) for t in CIPHERS]
        )
        got = run(sess, ids=ids, mask=mask)
        with torch.no_grad():
            logits, decoded = task.model(ids, mask), task.model.decode(ids, mask)
        texts = [
            "".join(task.vocab.decode(row[:n]))
            for row, n in zip(got["decoded"], mask.sum(1), strict=True)
        ]
        assert texts == [r["plaintext"] for r in task.predict(CIPHERS)]
        return diff(got["logits"], logits), bool((got["decoded"] == decoded.numpy()).all())
    if task.name == "tag":
        tokens = [s.split() for s in SENTENCES]
        batch = task.make_batch(tokens, with_tags=False)
        got = run(sess, **{i.name: batch[i.name] for i in sess.get_inputs()})
        with torch.no_grad():
            emissions, tags = task.model.emissions(batch), task.model.decode(batch)
        names = [
            [task.tag_vocab.itos[j] for j in row[: len(t)]]
            for row, t in zip(got["tags"], tokens, strict=True)
        ]
        assert names == [r["tags"] for r in task.predict(SENTENCES)]
        return diff(got["emissions"], emissions), bool((got["tags"] == tags.numpy()).all())
    if task.name == "classify":
        batch = task.collate([task.encode(t) for t in TEXTS])
        got = run(sess, **{i.name: batch[i.name] for i in sess.get_inputs()})
        expected = task.probabilities([task.encode(t) for t in TEXTS])
        labels = [task.label_vocab.itos[j] for j in got["probabilities"].argmax(1)]
        assert labels == [r["label"] for r in task.predict(TEXTS)]
        return diff(got["probabilities"], expected), None
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["cipher", "cipher-bidirectional", "tag", "tag-softmax", "classify", "classify-bow"]
)
def test_export_matches_pytorch_on_a_fresh_batch(name, models, tmp_path):
    out = tmp_path / f"{name}.onnx"
    report = export.export_onnx(models[name], out)
    (graph,) = report["graphs"]
    assert graph["path"] == str(out) and out.stat().st_size == graph["bytes"]
    assert report["checked"] and graph["max_abs_diff"] <= LIMIT
    assert graph["ids_equal"] is not False
    # every axis but the fixed widths is dynamic
    for value in graph["inputs"]:
        assert all(isinstance(d, str) for d in value["shape"]), value
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left

    task = rnnkit.load(models[name])
    largest, ids_equal = fresh_parity(name, task, out)
    checked = graph["max_abs_diff"]
    print(f"{name}: largest |ONNX - PyTorch| {largest:.2g} (the export's own check: {checked:.2g})")
    assert largest <= LIMIT
    assert ids_equal is (None if task.name == "classify" else True)


def test_bidirectional_check_batches_prove_padding_is_handled(models, tmp_path, monkeypatch):
    """The naive export, a bidirectional network run over the padded batch as it is, reads
    padding before the real tokens in its backward direction: the check must refuse it."""

    def naive(rnn, x, lengths):
        outputs, _ = rnn(x)
        real = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        return outputs.masked_fill(~real.unsqueeze(2), 0.0)

    monkeypatch.setattr(encoder, "unpacked", naive)
    out = tmp_path / "naive.onnx"
    with pytest.raises(export.ExportError, match="differs from PyTorch.*logits by"):
        export.export_onnx(models["cipher-bidirectional"], out)
    assert not out.exists()


def test_lm_step_graph_greedy_20_tokens_equal_predict(models, tmp_path):
    out = tmp_path / "lm.onnx"
    report = export.export_onnx(models["lm"], out)
    assert [v["name"] for v in report["graphs"][0]["inputs"]] == ["tokens", "h", "c"]
    task = rnnkit.load(models["lm"])
    prompt = "the c"
    expected = task.predict([prompt], temperature=0, length=20)[0]["text"]

    sess = session(out)
    # h (and c): (layers, batch, hidden), zeros to start, as generate() starts
    state = {
        i.name: np.zeros((i.shape[0], 1, i.shape[2]), np.float32) for i in sess.get_inputs()[1:]
    }
    banned = [task.vocab.stoi[PAD], task.vocab.stoi[UNK]]
    torch_state, largest = None, 0.0

    def step(token: int) -> np.ndarray:
        nonlocal state, torch_state, largest
        tokens = np.array([[token]], dtype=np.int64)
        got = run(sess, tokens=tokens, **state)
        state = {name: got[f"{name}_next"] for name in state}
        with torch.no_grad():  # PyTorch in lockstep, for the largest difference
            features, torch_state = task.model(torch.from_numpy(tokens), torch_state)
            want = task.model.log_probs(features[:, -1])
        largest = max(largest, diff(got["log_probs"], want))
        return got["log_probs"]

    # as generate() does: a line break first, then the prompt; the graph reads it step by step
    for token in task.vocab.encode(["\n", *prompt]):
        log_probs = step(token)
    words = []
    for _ in range(20):
        log_probs[:, banned] = -math.inf
        token = int(log_probs.argmax(-1)[0])
        words.append(task.vocab.itos[token])
        log_probs = step(token)
    print(f"lm: 20 greedy steps, largest |ONNX - PyTorch| {largest:.2g}")
    assert "".join(words) == expected
    assert largest <= LIMIT


@pytest.mark.parametrize("name", ["translate", "translate-lstm"])
def test_translate_graphs_greedy_loop_equals_predict_beam_1(name, models, tmp_path):
    report = export.export_onnx(models[name], tmp_path / "fr-en.onnx")
    paths = [g["path"] for g in report["graphs"]]
    assert paths == [str(tmp_path / "fr-en.encoder.onnx"), str(tmp_path / "fr-en.decoder.onnx")]
    task = rnnkit.load(models[name])
    expected = [r["translation"] for r in task.predict(FRENCH, beam=1)]

    encoder, decoder = session(paths[0]), session(paths[1])
    from rnnkit.nn.seq2seq import BOS_ID, EOS_ID

    batch = task.make_batch([normalise_french(s) for s in FRENCH])
    start = run(encoder, source=batch["source"], source_mask=batch["source_mask"])
    with torch.no_grad():
        torch_state = task.model.start(batch)
    largest = max(diff(start[k], torch_state[k]) for k in start)
    states = [i.name for i in decoder.get_inputs()][1:-3]  # hidden, [cell], [feed]
    state = {k: start[k] for k in states}
    # greedy search (rnnkit.nn.search.greedy_search) over the decoder step graph
    n = len(FRENCH)
    limits = (2 * batch["source_mask"].sum(1) + 10).clamp(max=task.config.decode.max_length)
    prev = np.full(n, BOS_ID, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    tokens = []
    for t in range(int(limits.max())):
        got = run(decoder, token=prev, **state, memory=start["memory"], keys=start["keys"],
                  source_mask=batch["source_mask"])  # fmt: skip
        with torch.no_grad():
            log_probs, _, torch_state = task.model.log_probs_step(
                torch.from_numpy(prev), torch_state
            )
        largest = max(largest, diff(got["log_probs"], log_probs))
        token = np.where(done, 0, got["log_probs"].argmax(-1))
        lengths += ~done
        tokens.append(token)
        done |= (token == EOS_ID) | (t + 1 >= limits.numpy())
        state = {k: got[f"{k}_next"] for k in states}
        prev = token
        if done.all():
            break
    found = np.stack(tokens, 1)
    translations = [
        " ".join(task.target_vocab.decode(found[j, : lengths[j]].tolist())) for j in range(n)
    ]
    print(f"{name}: greedy loop, largest |ONNX - PyTorch| {largest:.2g}")
    assert translations == expected
    assert largest <= LIMIT


def test_embed_has_no_onnx_export(models, tmp_path):
    with pytest.raises(RnnkitError) as caught:
        export.export_onnx(models["embed"], tmp_path / "embed.onnx")
    assert str(caught.value) == (
        "the embed task has no ONNX export: its vectors are a text file (rnnkit embed export)"
    )
    assert not (tmp_path / "embed.onnx").exists()


def test_a_failed_check_writes_nothing_and_no_check_writes(models, tmp_path, monkeypatch):
    out = tmp_path / "tag.onnx"
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference passes, not even 0
    with pytest.raises(export.ExportError, match="differs from PyTorch") as caught:
        export.export_onnx(models["tag"], out)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    report = export.export_onnx(models["tag"], out, check=False)
    assert out.exists() and not report["checked"]
    assert report["graphs"][0]["max_abs_diff"] is None


def test_an_onnxruntime_failure_is_one_line_and_writes_nothing(models, tmp_path, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    def fail(*_):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : GatherElements: index out of range\nmore")

    monkeypatch.setattr(export, "_run", fail)
    with pytest.raises(export.ExportError) as caught:
        export.export_onnx(models["cipher"], tmp_path / "c.onnx")
    assert str(caught.value).startswith("onnxruntime cannot run the exported graph (")
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []


def test_check_falls_back_to_the_vocabulary_without_the_recipe_data(models, tmp_path):
    import json
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(models["tag"], moved)
    config = json.loads((moved / "config.json").read_text())
    for split in ("train", "dev", "test"):
        config["config"]["data"][split] = str(tmp_path / "gone" / f"{split}.iob2")
    (moved / "config.json").write_text(json.dumps(config))
    report = export.export_onnx(moved, tmp_path / "tag.onnx", opset=20)
    assert report["opset"] == 20
    assert report["check_data"] == "tokens drawn from the model's vocabulary"
    assert report["graphs"][0]["max_abs_diff"] <= LIMIT and report["graphs"][0]["ids_equal"]


def test_cli_parser_and_command(models, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="rnnkit")
    export.add_export_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cipher.onnx"
    args = parser.parse_args(["export", "--model", str(models["cipher"]), "--out", str(out)])
    assert (args.format, args.opset, args.no_check) == ("onnx", 17, False)
    assert export.cmd_export(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "parity with PyTorch" in printed
    assert "ids identical" in printed
    args = parser.parse_args(["export", "--model", str(models["cipher"]), "--out", str(out),
                              "--opset", "16"])  # fmt: skip
    with pytest.raises(RnnkitError, match="--opset 16: from 17 to 20"):
        export.cmd_export(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--model", "m", "--out", "o", "--format", "tflite"])
    args = parser.parse_args(["export", "--model", str(models["cipher"]), "--out", str(tmp_path)])
    with pytest.raises(RnnkitError, match="is a directory"):
        export.cmd_export(args)


def test_output_paths():
    assert export.output_paths("m.onnx", ["model"]) == {"model": Path("m.onnx")}
    paths = export.output_paths("runs/fr.onnx", ["encoder", "decoder"])
    assert [str(p) for p in paths.values()] == ["runs/fr.encoder.onnx", "runs/fr.decoder.onnx"]
    assert str(export.output_paths("fr", ["encoder", "decoder"])["decoder"]) == "fr.decoder.onnx"


def test_reverse_within_its_length():
    x = torch.arange(12.0).view(2, 6, 1)  # rows 0..5 and 6..11
    lengths = torch.tensor([4, 6])
    flipped = reverse_within(x, lengths).squeeze(2)
    assert flipped.tolist() == [[3, 2, 1, 0, 4, 5], [11, 10, 9, 8, 7, 6]]
    assert torch.equal(reverse_within(reverse_within(x, lengths), lengths), x)


def test_scripted_viterbi_equals_crf_decode():
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    crf = CRF(len(tags), *bio_constraints(tags, "IOB2"))
    generator = torch.Generator().manual_seed(3)
    emissions = torch.randn(6, 9, len(tags), generator=generator)
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    mask = torch.arange(9).unsqueeze(0) < lengths.unsqueeze(1)
    scripted = scripted_viterbi()
    best = scripted(emissions, mask, *crf._scores()).masked_fill(~mask, 0)
    assert torch.equal(best, crf.decode(emissions, mask)[0])
    one = scripted(emissions[:1, :1], mask[:1, :1], *crf._scores())  # one step: no loop
    assert torch.equal(one, crf.decode(emissions[:1, :1], mask[:1, :1])[0])
