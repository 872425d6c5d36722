"""Breaking classical ciphers whose key is unknown: Caesar, Vigenère and simple substitution.

Two ways, measured side by side in ``bench/cipher.py``:

* ``search``, guided by one of rnnkit's own character language models (an ``lm`` task). One pass
  of the LM over the current decipherment gives, at every letter, the log-probability of each of
  the 26 letters there given the text before it. Summed per key letter (Vigenère column) or per
  cipher letter (substitution), these predict which key changes raise the likelihood. The best
  predicted changes are then scored exactly, whole texts in one batch, and the best one is kept:
  coordinate ascent over key letters for Vigenère, a local search over complete keys with
  LM-proposed swaps and restarts for substitution. A Vigenère period is chosen among all periods
  by likelihood minus ``period · ln 26`` (the cost of naming each key letter), so a key that
  repeats itself never wins over its shorter self.
* ``classical``, the floor to beat: the index of coincidence for the period and chi-squared
  against English letter frequencies for each key letter; for substitution, cipher letters
  matched to plaintext letters by frequency rank.

Letters a-z are enciphered, with their case; everything else passes through (see
:mod:`rnnkit.data.ciphers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from rnnkit.data.ciphers import (
    LETTERS,
    CipherName,
    Letters,
    decipher,
    encipher_letters,
    key_text,
)
from rnnkit.errors import ConfigError, DataError
from rnnkit.tasks.base import CharacterLM, Task

Method = Literal["search", "classical"]
MAX_TEXT = 100_000  # characters of ciphertext in one crack
MAX_PERIOD = 64
SEARCH_WINDOW = 2_000  # characters of a long ciphertext that the key is searched on

# Relative frequencies of a..z in English prose (the usual published table).
ENGLISH = torch.tensor(
    [8.167, 1.492, 2.782, 4.253, 12.702, 2.228, 2.015, 6.094, 6.966, 0.153, 0.772, 4.025, 2.406]
    + [6.749, 7.507, 1.929, 0.095, 5.987, 6.327, 9.056, 2.758, 0.978, 2.360, 0.150, 1.974, 0.074]
)
ENGLISH = ENGLISH / ENGLISH.sum()


@dataclass
class Cracked:
    """What a crack found: the plaintext, the key, the LM's log-likelihood per letter (nats),
    and how far to trust it (see :class:`Confidence`). ``score`` and ``confidence`` are
    ``None`` for the classical way, which has no LM to judge with."""

    plaintext: str
    key: str
    score: float | None
    period: int | None = None  # Vigenère: the period chosen
    confidence: Confidence | None = None

    @property
    def low_confidence(self) -> bool | None:
        """True where the answer should not be trusted (``None`` without an LM)."""
        return None if self.confidence is None else self.confidence.low

    def as_dict(self) -> dict:
        """The result as plain JSON data (``rnnkit crack --json``); ``period`` only when one was
        chosen; ``confidence``, ``low_confidence``, ``excess`` and ``margin`` with an LM."""
        out = {"plaintext": self.plaintext, "key": self.key, "score": self.score}
        if self.period is not None:
            out["period"] = self.period
        if self.confidence is not None:
            out |= self.confidence.as_dict()
        return out


@dataclass(frozen=True)
class Calibration:
    """How real text sits against a character LM's own expectation, measured on windows of
    text the LM was not trained on (its dev text: :meth:`CharScorer.calibrate`).

    At every character the LM expects a surprisal equal to the entropy of its prediction
    there; real text runs ``excess`` nats per character above that (the LM is not perfect),
    and a window of n characters scatters around it by ``spread`` times the standard error
    that the LM's own predictions give (``sqrt(sum of variances) / n``). A decipherment more
    than ``tolerance`` such errors above ``excess`` does not read like the text the LM knows.
    The defaults were measured on 32 windows of 256 characters of WikiText-2 valid with
    ``configs/english-char-lm.yaml`` trained for 1,520 steps (docs/cipher.md).
    """

    excess: float = -0.066
    spread: float = 1.41
    tolerance: float = 4.0

    def standardised(self, excess: float, error: float) -> float:
        """A window's excess (nats per character) in units of its scatter: 0 is typical of
        real text, ``tolerance`` the limit."""
        return (excess - self.excess) / max(1e-9, self.spread * error)


@dataclass(frozen=True)
class Confidence:
    """How far to trust a crack, from two questions put to the LM.

    * Does the answer read like real text? ``excess``: nats per character by which its
      surprisal exceeds what the LM expects of text it would write itself, against the
      :class:`Calibration` of the LM (``fit``, 0..1, is 0.5 at the calibrated limit).
    * Is it the only answer that does? ``margin``: nats by which the answer's log-likelihood
      beats the best other local optimum the search met that reads more than a tenth of the
      letters differently (``None`` when every restart came back to this answer); as odds,
      the answer is ``exp(margin)`` times likelier.

    ``value`` is ``fit`` times the probability the margin gives; ``low`` flags a value under
    one half.
    """

    excess: float
    fit: float
    margin: float | None = None

    @property
    def value(self) -> float:
        """The confidence, 0..1."""
        if self.margin is None:
            return self.fit
        return self.fit * _sigmoid(self.margin)

    @property
    def low(self) -> bool:
        """True where the answer should not be trusted."""
        return self.value < 0.5

    def as_dict(self) -> dict:
        """``confidence``, ``low_confidence``, ``excess`` and ``margin`` as plain JSON data."""
        return {
            "confidence": round(self.value, 4),
            "low_confidence": self.low,
            "excess": round(self.excess, 4),
            "margin": None if self.margin is None else round(self.margin, 3),
        }


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


class CharScorer:
    """A character LM (:class:`~rnnkit.tasks.base.CharacterLM`) scoring candidate plaintexts.

    Every candidate of one ciphertext has the same length, so candidates go through the LM as
    one batch ``(n, length)``; a backward LM reads them reversed, which the LM sees to.
    """

    def __init__(
        self, task: Task, tokens_per_batch: int = 1 << 17, calibration: Calibration | None = None
    ):
        if not isinstance(task, CharacterLM):
            raise ConfigError(f"crack needs a character-level lm model, not {task.name}")
        self.task: CharacterLM = task
        self.lower = task.char_ids(LETTERS)  # also refuses a word-level LM
        self.upper = task.char_ids(LETTERS.upper())
        self.tokens_per_batch = tokens_per_batch
        self.calibration = calibration or Calibration()

    def layout(self, letters: Letters) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token ids of the text ``(length,)``, where its letters sit in them ``(m,)``,
        and the id each of 26 letters takes at each of those places ``(m, 26)``."""
        ids = self.task.char_ids(letters.text)
        table = torch.where(letters.upper.unsqueeze(1), self.upper, self.lower)
        return ids, letters.positions, table

    def fill(self, layout, plain: torch.Tensor) -> torch.Tensor:
        """Candidate plaintexts as ids ``(n, length)`` from letter values ``(n, m)``."""
        ids, slots, table = layout
        out = ids.expand(plain.shape[0], -1).clone()
        out[:, slots] = table.gather(1, plain.T).T
        return out

    def _log_probs(self, ids: torch.Tensor):
        """Yield ``(rows, log-probabilities (r, length, vocab))`` of each token given the text
        before it, a bounded batch of rows at a time."""
        n, length = ids.shape
        rows = max(1, self.tokens_per_batch // (length + 1))
        for start in range(0, n, rows):
            yield start, self.task.next_log_probs(ids[start : start + rows])

    @torch.inference_mode()
    def log_likelihood(self, ids: torch.Tensor) -> torch.Tensor:
        """Total log-probability (nats) of each candidate ``(n, length)`` → ``(n,)``."""
        out = torch.empty(len(ids))
        for start, logp in self._log_probs(ids):
            chunk = ids[start : start + len(logp)].to(logp.device)
            picked = logp.gather(2, chunk.unsqueeze(2)).squeeze(2)
            out[start : start + len(logp)] = picked.nan_to_num(0.0, neginf=0.0).sum(1).cpu()
        return out

    @torch.inference_mode()
    def surprise(self, ids: torch.Tensor) -> torch.Tensor:
        """How candidates ``(n, length)`` sit against the LM's own expectation ``(n, 3)``: per
        row, the surprisal (nats), the surprisal the LM expects of text it would write itself
        (its predictions' summed entropy), and that expectation's variance (nats²)."""
        out = torch.empty(len(ids), 3)
        for start, logp in self._log_probs(ids):
            chunk = ids[start : start + len(logp)].to(logp.device)
            logp = logp.float().nan_to_num(0.0, neginf=-1e4)
            picked = -logp.gather(2, chunk.unsqueeze(2)).squeeze(2)
            p = logp.exp()
            entropy = -(p * logp).sum(2)
            variance = (p * logp.square()).sum(2) - entropy.square()
            rows = torch.stack([picked.sum(1), entropy.sum(1), variance.clamp(min=0).sum(1)], 1)
            out[start : start + len(logp)] = rows.cpu()
        return out

    def excess(self, text: str) -> tuple[float, float]:
        """Nats per character by which ``text``'s surprisal exceeds the LM's expectation, and
        that figure's standard error under the LM's own predictions."""
        surprisal, expected, variance = self.surprise(self.task.char_ids(text)[None])[0].tolist()
        n = max(1, len(text))
        return (surprisal - expected) / n, math.sqrt(variance) / n

    def judge(self, text: str, margin: float | None = None) -> Confidence:
        """The :class:`Confidence` of a decipherment ``text`` (``margin``: see there)."""
        excess, error = self.excess(text)
        z = self.calibration.standardised(excess, error)
        return Confidence(excess, _sigmoid(2.0 * (self.calibration.tolerance - z)), margin)

    def calibrate(self, text: str, length: int = 256, windows: int = 32) -> Calibration:
        """Measure (and from now on use) how real ``text`` sits against the LM: ``windows``
        windows of ``length`` characters spread evenly over it, each starting at a word. Give
        text the LM was not trained on (its dev text), never the text to be judged."""
        spaced = " ".join(text.split())
        if len(spaced) < 2 * length:
            raise DataError(
                f"calibration text of {len(spaced):,} characters (at least {2 * length:,})"
            )
        found = []
        for i in range(windows):
            start = spaced.find(" ", i * (len(spaced) - length) // windows) + 1
            found.append(self.excess(spaced[start : start + length]))
        excess = torch.tensor(found)
        mean = float(excess[:, 0].mean())
        spread = float(((excess[:, 0] - mean) / excess[:, 1]).std()) if windows > 1 else 1.0
        self.calibration = Calibration(mean, max(spread, 0.5), self.calibration.tolerance)
        return self.calibration

    @torch.inference_mode()
    def letter_scores(self, layout, plain: torch.Tensor) -> torch.Tensor:
        """For one candidate ``(m,)``: the log-probability of each letter at each of its
        letter places, given the text before that place ``(m, 26)``."""
        ids, slots, table = layout
        ((_, logp),) = self._log_probs(self.fill(layout, plain.unsqueeze(0)))
        at = logp[0, slots.to(logp.device)].cpu()  # (m, vocab)
        return at.gather(1, table).nan_to_num(0.0, neginf=-30.0)


# --------------------------------------------------------------------------- classical
def coincidence(values: torch.Tensor) -> float:
    """Index of coincidence of letter values ``(m,)``: English ≈ 0.066, random ≈ 0.038."""
    m = len(values)
    if m < 2:
        return 0.0
    counts = torch.bincount(values, minlength=26).double()
    return float((counts * (counts - 1)).sum() / (m * (m - 1)))


def guess_period(values: torch.Tensor, max_period: int) -> int:
    """The period whose columns look most like English by the index of coincidence.

    The smallest period within 0.006 of the best (about a tenth of the gap between English and
    random text) wins, because every multiple of the true period looks as good as it."""
    scores = {}
    for p in range(1, min(max_period, max(1, len(values) // 2)) + 1):
        scores[p] = sum(coincidence(values[j::p]) for j in range(p)) / p
    best = max(scores.values())
    return min(p for p, s in scores.items() if s >= best - 0.006)


def chi_squared_shifts(values: torch.Tensor, period: int) -> torch.Tensor:
    """For each of ``period`` columns, the shift whose decipherment's letter counts are
    closest to English by chi-squared ``(period,)``."""
    shifts = []
    for j in range(period):
        counts = torch.bincount(values[j::period], minlength=26).double()
        total = max(1.0, float(counts.sum()))
        expected = ENGLISH.double() * total
        # Deciphering with shift s turns cipher letter (p + s) into plaintext p.
        chi = [float(((counts.roll(-s) - expected) ** 2 / expected).sum()) for s in range(26)]
        shifts.append(min(range(26), key=chi.__getitem__))
    return torch.tensor(shifts)


def frequency_key(values: torch.Tensor) -> torch.Tensor:
    """Substitution: the plaintext letter for each cipher letter ``(26,)``, matching the two by
    frequency rank (ties by alphabet order)."""
    counts = torch.bincount(values, minlength=26).double()
    order = torch.argsort(-counts + torch.arange(26) * 1e-6)
    english = torch.argsort(-ENGLISH)
    plain_of = torch.empty(26, dtype=torch.long)
    plain_of[order] = english
    return plain_of


# ----------------------------------------------------------------------------- search
def _periodic_plain(values: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Decipher letter values ``(m,)`` with each of ``keys`` ``(n, p)`` → ``(n, m)``."""
    column = torch.arange(len(values)) % keys.shape[1]
    return (values.unsqueeze(0) - keys[:, column]) % 26


def _column_gains(scores: torch.Tensor, values: torch.Tensor, period: int) -> torch.Tensor:
    """From letter scores ``(m, 26)``: the summed score of each shift of each column
    ``(period, 26)``; shift s deciphers cipher letter c as (c - s) mod 26."""
    m = len(values)
    shifts = torch.arange(26)
    plain = (values.unsqueeze(1) - shifts.unsqueeze(0)) % 26  # (m, 26)
    per_shift = scores.gather(1, plain)  # (m, 26)
    out = torch.zeros(period, 26)
    out.index_add_(0, torch.arange(m) % period, per_shift)
    return out


def refine_periodic(
    scorer: CharScorer, letters: Letters, key: torch.Tensor, layout=None, rounds: int = 20
) -> tuple[torch.Tensor, float]:
    """Coordinate ascent on a periodic key ``(p,)`` by LM likelihood; returns (key, nats)."""
    layout = layout or scorer.layout(letters)
    values = letters.values
    best = float(scorer.log_likelihood(scorer.fill(layout, _periodic_plain(values, key[None]))))
    for _ in range(rounds):
        plain = _periodic_plain(values, key[None])[0]
        gains = _column_gains(scorer.letter_scores(layout, plain), values, len(key))
        # Candidates: every column's two likeliest shifts (alone), and all columns at once.
        candidates = [gains.argmax(1)]
        for j, top in enumerate(gains.topk(2, dim=1).indices.tolist()):
            for shift in top:
                if shift != key[j]:
                    moved = key.clone()
                    moved[j] = shift
                    candidates.append(moved)
        keys = torch.stack(candidates)
        scores = scorer.log_likelihood(scorer.fill(layout, _periodic_plain(values, keys)))
        top = int(scores.argmax())
        if float(scores[top]) <= best + 1e-6:
            break
        key, best = keys[top], float(scores[top])
    return key, best


def polish_periodic(
    scorer: CharScorer, letters: Letters, key: torch.Tensor, best: float, layout=None
) -> tuple[torch.Tensor, float]:
    """Try all 26 shifts of every column exactly, until no single change helps."""
    layout = layout or scorer.layout(letters)
    while True:
        keys = key.repeat(26 * len(key), 1)
        for j in range(len(key)):
            keys[26 * j : 26 * (j + 1), j] = torch.arange(26)
        scores = scorer.log_likelihood(scorer.fill(layout, _periodic_plain(letters.values, keys)))
        top = int(scores.argmax())
        if float(scores[top]) <= best + 1e-6:
            return key, best
        key, best = keys[top], float(scores[top])


def crack_vigenere(
    text: str, scorer: CharScorer | None, max_period: int = 8, method: Method = "search"
) -> Cracked:
    """Find a Vigenère key of period 1..``max_period`` (Caesar: ``max_period=1``)."""
    letters = _letters_of(text)
    values = letters.values
    if method == "classical":
        period = guess_period(values, max_period)
        key = chi_squared_shifts(values, period)
        plain = _periodic_plain(values, key[None])[0]
        return Cracked(letters.render(plain), key_text("vigenere", key), None, period)
    scorer = _need(scorer)
    layout = scorer.layout(letters)
    found = []
    for period in range(1, min(max_period, len(values)) + 1):
        key, nats = refine_periodic(scorer, letters, chi_squared_shifts(values, period), layout)
        found.append((nats - period * math.log(26), period, key, nats))
    _, period, key, nats = max(found, key=lambda f: f[0])
    key, nats = polish_periodic(scorer, letters, key, nats, layout)
    key = _shortest_period(key)
    plaintext = letters.render(_periodic_plain(values, key[None])[0])
    confidence = scorer.judge(plaintext)
    return Cracked(plaintext, key_text("vigenere", key), nats / len(values), len(key), confidence)


def _shortest_period(key: torch.Tensor) -> torch.Tensor:
    """``abab`` → ``ab``: the same cipher, named by its shortest key."""
    for p in range(1, len(key) + 1):
        if len(key) % p == 0 and torch.equal(key, key[:p].repeat(len(key) // p)):
            return key[:p]
    return key


def crack_substitution(
    text: str,
    scorer: CharScorer | None,
    method: Method = "search",
    proposals: int = 24,
    restarts: int = 6,
    seed: int = 0,
    max_restarts: int = 24,
    patience: int = 8,
) -> Cracked:
    """Find a simple substitution key: local search over complete keys, moves proposed by the
    LM's letter scores and accepted by exact likelihood, restarted from perturbed optima.

    After ``restarts`` restarts the search stops if its best answer reads like real text to
    the LM (:meth:`CharScorer.judge`). While it does not, the search goes on with harder kicks
    and fresh starts, until ``max_restarts``, or until ``patience`` restarts in a row found
    nothing better (text that no key makes readable, such as random letters). Every local
    optimum met is kept, so the answer's margin over a different reading can be reported."""
    letters = _letters_of(text)
    values = letters.values
    plain_of = frequency_key(values)
    if method == "classical":
        return Cracked(letters.render(plain_of[values]), _substitution_key(plain_of), None)
    scorer = _need(scorer)
    layout = scorer.layout(letters)
    present = torch.bincount(values, minlength=26) > 0
    generator = torch.Generator().manual_seed(seed)
    optima = [_climb(scorer, layout, values, present, plain_of, proposals)]
    since_better = 0
    for restart in range(max(restarts, max_restarts)):
        best_key, best = max(optima, key=lambda o: o[1])
        fit = scorer.judge(letters.render(best_key[values]))
        if restart >= restarts and (not fit.low or since_better >= patience):
            break
        start = _restart_key(best_key, present, generator, restart, fit.fit)
        optima.append(_climb(scorer, layout, values, present, start, proposals, optima))
        since_better = 0 if optima[-1][1] > best + 1e-6 else since_better + 1
    best_key, best = max(optima, key=lambda o: o[1])
    plaintext = letters.render(best_key[values])
    confidence = scorer.judge(plaintext, _margin(optima, best_key, best, values))
    return Cracked(plaintext, _substitution_key(best_key), best / len(values), None, confidence)


def _restart_key(best_key, present, generator, restart: int, fit: float) -> torch.Tensor:
    """Where the next climb starts: three random swaps from the best key while it reads like
    real text; when it does not, more swaps with every restart, and every third restart a
    random key (the best may be a trap the swaps cannot leave)."""
    if fit >= 0.5:
        return _perturb(best_key, present, generator, 3)
    if restart % 3 == 2:
        return torch.randperm(26, generator=generator)
    return _perturb(best_key, present, generator, min(4 + restart, 12))


def _margin(optima, best_key, best: float, values: torch.Tensor) -> float | None:
    """Nats by which the best optimum beats the best one that reads more than a tenth of the
    letters differently (``None``: no such optimum was met)."""
    rivals = [
        nats
        for key, nats in optima
        if float((key[values] != best_key[values]).float().mean()) > 0.1
    ]
    return best - max(rivals) if rivals else None


def _climb(scorer, layout, values, present, plain_of, proposals: int, known=()):
    """Hill-climb from ``plain_of`` (plaintext letter per cipher letter, ``(26,)``): the LM's
    proposals first; once none helps, every swap exactly, so the end is a true local optimum.
    A climb whose proposals lead back to one of the ``known`` optima (already checked against
    every swap) stops there."""
    best = float(scorer.log_likelihood(scorer.fill(layout, plain_of[values][None])))
    seen = {_reading(key, present) for key, _ in known}
    while True:
        plain_of, best = _climb_proposed(scorer, layout, values, present, plain_of, best, proposals)
        if _reading(plain_of, present) in seen:
            return plain_of, best
        keys = _all_swaps(plain_of, present)
        exact = scorer.log_likelihood(scorer.fill(layout, keys[:, values]))
        top = int(exact.argmax())
        if float(exact[top]) <= best + 1e-6:
            return plain_of, best
        plain_of, best = keys[top], float(exact[top])


def _reading(plain_of: torch.Tensor, present: torch.Tensor) -> tuple[int, ...]:
    """What a key makes of the cipher letters present: keys equal here read the text alike."""
    return tuple(plain_of[present].tolist())


def _all_swaps(plain_of: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Every key one swap away that changes the reading of a present cipher letter."""
    keys = []
    for a in present.nonzero().squeeze(1).tolist():
        for b in range(26):
            if b != a and (b > a or not present[b]):
                key = plain_of.clone()
                key[a], key[b] = plain_of[b], plain_of[a]
                keys.append(key)
    return torch.stack(keys) if keys else plain_of[None]


def _climb_proposed(scorer, layout, values, present, plain_of, best: float, proposals: int):
    """Steepest ascent over the swaps that the LM's letter scores predict to help most."""
    for _ in range(400):
        scores = scorer.letter_scores(layout, plain_of[values])
        gain = torch.zeros(26, 26)  # gain[c, p]: summed score of reading cipher c as p
        gain.index_add_(0, values, scores)
        own = gain.gather(1, plain_of[:, None]).squeeze(1)  # (26,)
        # Swapping the plaintext letters of cipher letters a and b (an absent b is a free
        # letter): predicted change of the summed scores.
        delta = gain[:, plain_of] + gain[:, plain_of].T - own[:, None] - own[None, :]
        delta[~present[:, None].expand(26, 26) & ~present[None, :].expand(26, 26)] = -math.inf
        delta.fill_diagonal_(-math.inf)
        delta = torch.triu(delta) + torch.tril(torch.full((26, 26), -math.inf), -1)
        order = delta.flatten().argsort(descending=True)[:proposals]
        keys = []
        for flat in order.tolist():
            a, b = divmod(flat, 26)
            if math.isinf(float(delta[a, b])):
                break
            key = plain_of.clone()
            key[a], key[b] = plain_of[b], plain_of[a]
            keys.append(key)
        keys.append(_assignment(gain, present, plain_of))
        keys_t = torch.stack(keys)
        exact = scorer.log_likelihood(scorer.fill(layout, keys_t[:, values]))
        top = int(exact.argmax())
        if float(exact[top]) <= best + 1e-6:
            break
        plain_of, best = keys_t[top], float(exact[top])
    return plain_of, best


def _assignment(gain: torch.Tensor, present: torch.Tensor, plain_of: torch.Tensor):
    """The one-to-one reading of the present cipher letters that maximises the summed letter
    scores (the Hungarian method); absent cipher letters take the plaintext letters left."""
    from scipy.optimize import linear_sum_assignment

    rows = present.nonzero().squeeze(1)
    _, cols = linear_sum_assignment(gain[rows].numpy(), maximize=True)
    key = torch.full((26,), -1, dtype=torch.long)
    key[rows] = torch.as_tensor(cols, dtype=torch.long)
    free = [p for p in range(26) if p not in set(cols.tolist())]
    key[~present] = torch.tensor(free, dtype=torch.long)
    return key


def _perturb(
    plain_of: torch.Tensor, present: torch.Tensor, generator: torch.Generator, swaps: int = 3
):
    """``swaps`` random swaps among the present cipher letters."""
    key = plain_of.clone()
    letters = present.nonzero().squeeze(1)
    if len(letters) < 2:
        return key
    for _ in range(swaps):
        a, b = letters[torch.randperm(len(letters), generator=generator)[:2]].tolist()
        key[a], key[b] = key[b].clone(), key[a].clone()
    return key


def _substitution_key(plain_of: torch.Tensor) -> str:
    """The key as the cipher letters for plaintext a..z (what :func:`encipher` takes)."""
    return key_text("substitution", torch.argsort(plain_of))


def _letters_of(text: str) -> Letters:
    if len(text) > MAX_TEXT:
        raise DataError(f"ciphertext of {len(text):,} characters (at most {MAX_TEXT:,})")
    letters = Letters(text)
    if not len(letters):
        raise DataError("the ciphertext holds no letters a-z to decipher")
    return letters


def _need(scorer: CharScorer | None) -> CharScorer:
    if scorer is None:
        raise ConfigError("the search needs a character LM (--lm DIR)")
    return scorer


def crack(
    text: str,
    cipher: CipherName,
    scorer: CharScorer | None = None,
    method: Method = "search",
    max_period: int = 8,
) -> Cracked:
    """Break ``text`` enciphered with ``cipher`` under an unknown key.

    The key is searched for on the first :data:`SEARCH_WINDOW` characters (plenty to find it,
    and the LM's work stays bounded), then the whole text is deciphered with it."""
    if not 1 <= max_period <= MAX_PERIOD:
        raise ConfigError(f"bad value {max_period} for max_period (from 1 to {MAX_PERIOD})")
    _letters_of(text)  # bounded, and holding letters
    head = text
    if len(text) > SEARCH_WINDOW:
        cut = text.rfind(" ", 0, SEARCH_WINDOW)
        head = text[: cut if cut > SEARCH_WINDOW // 2 else SEARCH_WINDOW]
    if cipher == "substitution":
        found = crack_substitution(head, scorer, method)
    elif cipher in ("caesar", "vigenere"):
        found = crack_vigenere(head, scorer, 1 if cipher == "caesar" else max_period, method)
        if cipher == "caesar":
            found.period = None
    else:
        raise ConfigError(f"unknown cipher {cipher!r} (caesar, vigenere, substitution)")
    if head is not text:  # the key found on the head deciphers all of it
        found.plaintext = decipher(text, cipher, found.key)
    return found


# ------------------------------------------------------------------------------- command
LM_ENV = "RNNKIT_CRACK_LM"


def add_crack_parser(sub) -> None:
    """Add ``crack`` to the ``rnnkit`` command's subparsers."""
    p = sub.add_parser(
        "crack",
        help="break a Caesar, Vigenère or substitution cipher with an unknown key",
        description="Find the key and plaintext of a classical ciphertext (letters a-z"
        " enciphered, case kept, everything else as it is). The search is guided by a"
        " character language model: train one with 'rnnkit train lm --config"
        f" configs/english-char-lm.yaml --out DIR' and give --lm DIR (or set ${LM_ENV}).",
    )
    p.add_argument("text", nargs="?", help="the ciphertext ('-' for stdin)")
    p.add_argument("--file", help="read the ciphertext from this file (all of it)")
    p.add_argument(
        "--cipher", required=True, choices=["caesar", "vigenere", "substitution"],
        help="the cipher to break",
    )  # fmt: skip
    p.add_argument("--lm", help=f"a character LM model directory (default: ${LM_ENV})")
    p.add_argument(
        "--dev", metavar="FILE",
        help="text the LM was not trained on (its dev text) to calibrate the confidence on"
        " (default: the calibration measured for configs/english-char-lm.yaml)",
    )  # fmt: skip
    p.add_argument(
        "--method", choices=["search", "classical"], default="search",
        help="search: guided by the LM (default); classical: letter frequencies, no LM",
    )  # fmt: skip
    p.add_argument(
        "--max-period", type=int, default=8, help="vigenere: longest key tried (default 8)"
    )
    p.add_argument(
        "--json", action="store_true",
        help="one JSON object: plaintext, key, score, confidence, low_confidence, ...",
    )  # fmt: skip
    p.add_argument("--device", default="cpu")


def cmd_crack(args) -> int:
    """``rnnkit crack``: read the ciphertext (argument, ``-`` for stdin, or ``--file``), break
    it (``--method search`` with the character LM of ``--lm`` or ``$RNNKIT_CRACK_LM``), and
    print the plaintext, with the key on stderr, or everything as one JSON object (``--json``)."""
    import json
    import os
    import sys

    from rnnkit.data.text import read_text

    if args.file and args.text:
        raise ConfigError("give the ciphertext or --file, not both")
    if args.file:
        text = read_text(args.file)
    elif args.text == "-":
        text = sys.stdin.read()
    elif args.text:
        text = args.text
    else:
        raise ConfigError("give the ciphertext, '-' for stdin, or --file F")
    scorer = None
    if args.method == "search":
        lm = args.lm or os.environ.get(LM_ENV)
        if not lm:
            raise ConfigError(
                f"the search needs a character LM: --lm DIR or ${LM_ENV} (train one with"
                " 'rnnkit train lm --config configs/english-char-lm.yaml --out DIR')"
            )
        from rnnkit.tasks import load_task

        scorer = CharScorer(load_task(lm, device=args.device))
        if args.dev:
            scorer.calibrate(read_text(args.dev))
    result = crack(text, args.cipher, scorer, args.method, args.max_period)
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
        return 0
    period = f" (period {result.period})" if result.period else ""
    score = f", score {result.score:.3f} nats/letter" if result.score is not None else ""
    trust = ""
    if result.confidence is not None:
        low = " LOW CONFIDENCE: this may not be the key" if result.confidence.low else ""
        trust = f", confidence {result.confidence.value:.2f}{low}"
    print(f"key: {result.key}{period}{score}{trust}", file=sys.stderr)
    print(result.plaintext, end="" if result.plaintext.endswith("\n") else "\n")
    return 0


def letter_accuracy(plaintext: str, truth: str) -> float:
    """The fraction of the letters of ``truth`` that ``plaintext`` has right (case-blind)."""
    right = [a.lower() == b.lower() for a, b in zip(plaintext, truth, strict=True) if b.isalpha()]
    return sum(right) / max(1, len(right))


__all__ = [
    "CharScorer",
    "Cracked",
    "crack",
    "crack_substitution",
    "crack_vigenere",
    "encipher_letters",
    "letter_accuracy",
]
