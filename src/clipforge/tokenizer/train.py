"""Train a CLIP BPE vocabulary on a caption corpus.

Words come from exactly the tokenizer's clean-up and pre-tokenisation (``text.py``), mapped to
GPT-2's byte characters, with ``</w>`` on each word's last symbol. Merges are learned greedily: the
most frequent adjacent pair (over word counts) is merged everywhere, ties broken by the pair's
token strings, so training is deterministic. The result has OpenAI's layout (``vocab.py``):
256 byte tokens, the same with ``</w>``, one token per merge, then start and end of text, so the
end token is the largest id (the text tower pools at ``argmax``).

A pair whose merged string already exists (``"ab" + "c"`` after ``"a" + "bc"``) is skipped: every
token string has one id, as Hugging Face's ``vocab.json`` requires.

Counting uses incremental pair statistics: merging a pair only revisits the words that contain it,
so 100k captions train in seconds.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable

from ..progress import progress_bar
from .text import clean_text, pretokenize
from .tokenizer import Tokenizer
from .vocab import EOT_TOKEN, SOT_TOKEN, WORD_END, Merge, TokenizerError, base_tokens, byte_to_unicode

log = logging.getLogger(__name__)
Pair = tuple[int, int]


def count_words(texts: Iterable[str]) -> Counter[str]:
    """Pre-tokenised words (byte-mapped, as BPE sees them) and their counts."""
    chunks: Counter[str] = Counter()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TokenizerError(f"texts[{i}] is {type(text).__name__}, expected str")
        cleaned = clean_text(text)
        if cleaned:
            chunks.update(cleaned.split(" "))  # chunks pre-tokenise independently (text.py)
    table = {i: c for i, c in enumerate(byte_to_unicode())}
    words: Counter[str] = Counter()
    for chunk, n in chunks.items():
        for word in pretokenize(chunk):
            if word not in (SOT_TOKEN, EOT_TOKEN):  # these encode to the special ids
                words[word.encode("utf-8").decode("latin-1").translate(table)] += n
    return words


def learn_merges(
    word_counts: Counter[str], *, num_merges: int, min_frequency: int, progress: bool
) -> list[Merge]:
    """Greedy BPE merges over ``word_counts`` (byte-mapped words); ties go to the lower id pair."""
    tokens = base_tokens()
    token_id = {t: i for i, t in enumerate(tokens)}
    words = [[token_id[c] for c in word[:-1]] + [token_id[word[-1] + WORD_END]] for word in word_counts]
    freqs = list(word_counts.values())

    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)  # words that contain (or once contained) a pair
    for w, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:], strict=False):
            counts[pair] += freqs[w]
            where[pair].add(w)
    heap = [_key(n, pair) for pair, n in counts.items()]  # a max-heap of (count, -pair) as ints
    heapq.heapify(heap)

    merges: list[Merge] = []
    bar = progress_bar(total=num_merges, desc="BPE merges", enabled=progress)
    while len(merges) < num_merges and heap:
        key = heapq.heappop(heap)
        n, pair = _unkey(key)
        if counts.get(pair) != n:
            continue  # stale: the pair's current count was pushed again
        if n < min_frequency:
            break
        a, b = pair
        joined = tokens[a] + tokens[b]
        del counts[pair]
        if joined in token_id:
            continue  # would duplicate a token string: never merge this pair
        new = len(tokens)
        tokens.append(joined)
        token_id[joined] = new
        merges.append((tokens[a], tokens[b]))
        bar.update()
        delta: dict[Pair, int] = defaultdict(int)
        for w in where.pop(pair):
            words[w], created = _merge_word(words[w], a, b, new, freqs[w], delta)
            for p in created:
                where[p].add(w)
        for p, d in delta.items():
            if p == pair or d == 0:
                continue
            counts[p] += d
            if counts[p] > 0:
                heapq.heappush(heap, _key(counts[p], p))
            else:
                del counts[p]
    bar.close()
    return merges


def _key(count: int, pair: Pair) -> int:
    """Heap key: smallest = highest count, then lowest (first, second) ids."""
    return (-count << 40) | (pair[0] << 20) | pair[1]


def _unkey(key: int) -> tuple[int, Pair]:
    return -(key >> 40), ((key >> 20) & 0xFFFFF, key & 0xFFFFF)


def _merge_word(
    symbols: list[int], a: int, b: int, new: int, f: int, delta: dict[Pair, int]
) -> tuple[list[int], list[Pair]]:
    """Replace each non-overlapping (a, b), left to right, by ``new``; add the pair-count changes
    (times the word's frequency ``f``) to ``delta`` and return the pairs it creates. Only the
    neighbours of a merge change."""
    out: list[int] = []
    created: list[Pair] = []
    i, n = 0, len(symbols)
    while i < n:
        try:
            j = symbols.index(a, i)  # C-speed scan to the next candidate
        except ValueError:
            break
        if j + 1 == n or symbols[j + 1] != b:
            out.extend(symbols[i : j + 1])
            i = j + 1
            continue
        out.extend(symbols[i:j])
        if out:
            left = out[-1]  # may be a `new` merged just before
            delta[(left, a)] -= f
            delta[(left, new)] += f
            created.append((left, new))
        if j + 2 < n:
            right = symbols[j + 2]
            delta[(b, right)] -= f
            delta[(new, right)] += f
            created.append((new, right))
        out.append(new)
        i = j + 2
    out.extend(symbols[i:])
    return out, created


def train_bpe(
    texts: Iterable[str],
    *,
    vocab_size: int,
    context_length: int = 77,
    min_frequency: int = 2,
    progress: bool = True,
) -> Tokenizer:
    """Learn a BPE vocabulary of (at most) ``vocab_size`` tokens from captions.

    ``vocab_size`` counts the 512 byte tokens and the 2 special tokens; training stops early when
    no pair occurs ``min_frequency`` times (the vocabulary is then smaller, with a warning).
    """
    base = len(base_tokens()) + 2
    if vocab_size < base:
        raise TokenizerError(
            f"vocab_size must be at least {base} (512 byte tokens + start + end), got {vocab_size}"
        )
    if min_frequency < 1:
        raise TokenizerError(f"min_frequency must be >= 1, got {min_frequency}")
    words = count_words(texts)
    merges = learn_merges(words, num_merges=vocab_size - base, min_frequency=min_frequency, progress=progress)
    if len(merges) < vocab_size - base:
        log.warning(
            "train_bpe: only %d merges occur >= %d times; vocabulary has %d tokens, not %d",
            len(merges),
            min_frequency,
            base + len(merges),
            vocab_size,
        )
    return Tokenizer.from_merges(merges, context_length=context_length)
