"""Generate the tokenizer golden asset: a varied caption corpus + open_clip's ids for every row.

Run by hand in the reference environment (it imports open_clip), from the repository root:

    /work/venv-oc/bin/python tests/assets/tokenizer/make_golden.py

Writes, next to this file:
    corpus.jsonl.gz   one JSON string per line (ASCII-escaped, so lone surrogates survive)
    golden.npz        ids: uint16 (N,) every row's ``SimpleTokenizer.encode`` ids back to back,
                      counts: int32 (rows,) how many ids each row has (no start/end, untruncated)

The corpus is ours and deterministic (``make_corpus(seed=0)``): plain captions, long texts beyond
77 tokens, many scripts, emoji, HTML entities, punctuation runs, contractions, numbers, control
characters, whitespace, case-folding traps (Turkish dotted I, sharp s, Greek final sigma, long s),
special-token strings, mojibake, NFD text and random code points. The generator also checks that
open_clip's padded/truncated output equals the rule the tests apply to the golden ids.
"""

from __future__ import annotations

import gzip
import json
import random
import unicodedata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_ROWS = 12_000

NOUNS = (
    "cat dog bird horse cow sheep elephant bear zebra giraffe man woman child boy girl person people "
    "player surfer skier car truck bus train bicycle motorcycle airplane boat bench chair couch table bed "
    "kitchen bathroom street road bridge building house tower church castle mountain river lake beach ocean "
    "forest tree flower garden park field sky cloud sunset sunrise city skyline window door wall floor "
    "pizza sandwich cake donut apple banana orange broccoli carrot coffee cup bottle glass plate bowl knife "
    "laptop computer phone keyboard television clock vase book umbrella kite frisbee skateboard surfboard "
    "painting photograph illustration sculpture logo diagram map poster shirt dress hat shoes jacket "
    "snow rain fog storm lightning rainbow desert canyon waterfall volcano glacier island harbor market "
    "guitar piano violin drum microphone stage concert crowd festival wedding birthday graduation"
).split()
ADJECTIVES = (
    "red blue green yellow black white brown gray orange purple pink golden silver small large tiny huge "
    "old young new ancient modern wooden metal plastic glass stone wet dry hot cold sunny cloudy dark bright "
    "colorful striped spotted fluffy shiny rusty empty crowded busy quiet beautiful ugly happy sad funny "
    "vintage abstract minimalist detailed blurry sharp famous local tall short long round square wide narrow"
).split()
VERBS = (
    "sitting standing walking running jumping flying swimming eating drinking holding riding playing "
    "looking sleeping lying parked hanging floating covered filled surrounded painted displayed reading "
    "cooking cutting throwing catching carrying wearing watching waiting crossing climbing"
).split()
PREPOSITIONS = (
    "on in near under over next to behind beside above across along inside outside with by at".split()
)
DETERMINERS = [
    "a",
    "the",
    "two",
    "three",
    "some",
    "many",
    "an old",
    "a pair of",
    "several",
    "one",
    "four",
    "this",
]
OPENERS = [
    "",
    "",
    "",
    "a photo of ",
    "an image of ",
    "a picture of ",
    "close-up of ",
    "photo: ",
    "a painting of ",
    "a black and white photo of ",
    "stock photo of ",
    "illustration of ",
    "a 3d render of ",
    "view of ",
    "this is ",
    "there is ",
]
ENDINGS = [
    "",
    "",
    ".",
    ".",
    ".",
    "!",
    "?",
    "...",
    "!!!",
    " :)",
    " :-(",
    " ;)",
    " #nofilter",
    " (2019)",
    " - stock image",
    " | getty images",
    " [hd]",
    "..",
    " ?!",
    " <3",
    " ~",
    " --",
]

FOREIGN = [
    "Un café au lait sur une table en bois, à Paris",
    "Élève dans la cour de l'école, été 1998",
    "Straße in München mit Überweg und Fußgängern",
    "Größe ändern: Übergröße für Bäume",
    "Niño jugando en la playa de Málaga al atardecer",
    "¿Dónde está la estación? ¡Aquí!",
    "Paisagem de São Paulo com céu azul e coração",
    "Ação e emoção na cidade",
    "Zażółć gęślą jaźń — Kraków, Łódź",
    "Příliš žluťoučký kůň úpěl ďábelské ódy",
    "Türkçe: İstanbul'da ılık bir gün, IĞDIR, ışık",
    "Tiếng Việt: Phở bò ở Hà Nội rất ngon",
    "Ελληνικά: Η Ακρόπολη στην Αθήνα, ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΙΣΥΦΟΣ",
    "σοφία, ΣΟΦΟΣ, Σίσυφος, ΑΣ. ΣΣ",
    "Русский: Красная площадь в Москве зимой",
    "Українська: Київ, ґанок, їжак, Євген",
    "Српски: Београд ноћу",
    "Български: Рила планина",
    "العربية: غروب الشمس فوق الصحراء",
    "مرحبا بالعالم ١٢٣ ٤٥٦",
    "עברית: שקיעה מעל הים התיכון",
    "हिन्दी: ताजमहल सूर्योदय के समय",
    "বাংলা: নদীর ধারে নৌকা",
    "ภาษาไทย: วัดพระแก้วในกรุงเทพ",
    "中文：一只猫坐在红色的沙发上",
    "繁體中文：台北的夜市很熱鬧",
    "日本語：富士山と桜の写真、とても綺麗です",
    "カタカナ：コーヒーショップ",
    "ﾊﾝｶｸｶﾀｶﾅ ｺｰﾋｰ",
    "한국어: 서울의 밤 풍경과 한강",
    "ქართული: თბილისი ღამით",
    "Հայերեն: Երևան",
    "አማርኛ: አዲስ አበባ",
    "தமிழ்: சென்னை கடற்கரை",
    "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
    "Ⴀ ⴀ Ა ა Ბ ბ",
    "ｆｕｌｌｗｉｄｔｈ ＬＥＴＴＥＲＳ　ａｎｄ　ＳＰＡＣＥ",
    "ﬁsh ﬂies ﬀ ﬃ ﬄ ﬆ Ĳssel",
    "Ǆemal ǅemal ǆemal",
    "Æsir Œuvre œil ð þ ø å",
    "Ångström Å Kelvin K ohm Ω",
    "naïve résumé coöperate façade jalapeño",
    "𝕸𝖆𝖙𝖍 𝓢𝓬𝓻𝓲𝓹𝓽 𝟙𝟚𝟛",
    "𐐀𐐨 Deseret",
]
EMOJI = [
    "🐶",
    "🐱",
    "🎉",
    "❤️",
    "❤",
    "👍🏽",
    "👩‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇺🇸",
    "🇯🇵",
    "1️⃣",
    "#️⃣",
    "©️",
    "🤷‍♂️",
    "😀",
    "😂",
    "🔥",
    "✨",
    "🌍",
    "🍕",
    "⚽",
    "☕",
    "🧑🏿‍🚀",
    "👨‍💻",
    "🙈🙉🙊",
    "💯",
    "🥳",
    "🫠",
    "⭐",
    "☀️",
]
ENTITIES = [
    "&amp;",
    "&#39;",
    "&lt;b&gt;",
    "&lt;/b&gt;",
    "&quot;",
    "&nbsp;",
    "&rsquo;",
    "&hellip;",
    "&#x2019;",
    "&AMP;",
    "&amp;amp;",
    "&amp;lt;",
    "&eacute;",
    "&EACUTE;",
    "&copy;",
    "&#128512;",
    "&#x1F600;",
    "&#0;",
    "&#xD800;",
    "&notanentity;",
    "&amp",
    "&lt",
    "AT&T",
    "R&D",
    "&",
    " & ",
    "&&",
    "&#",
    "&mdash;",
    "&ndash;",
    "&deg;",
    "&frac12;",
    "&times;",
    "&#8220;quoted&#8221;",
    "&ldquo;",
    "&trade;",
]
PUNCT = [
    "!!!",
    "...",
    "?!?!",
    "---",
    "***",
    "''",
    '""',
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "#hashtag",
    "@user",
    "http://example.com/a_b?c=d&e=f",
    "www.site.org",
    "user@mail.com",
    "C:\\Users\\x",
    "~/path/to/file.jpg",
    ":-)",
    "<3",
    "->",
    "=>",
    "...!",
    "?",
    "¡",
    "¿",
    "«",
    "»",
    "„",
    "“",
    "”",
    "‘",
    "’",
    "—",
    "–",
    "•",
    "·",
    "…",
    "※",
    "§",
    "¶",
    "†",
    "%",
    "$",
    "€",
    "£",
    "¥",
    "₹",
    "°",
    "±",
    "×",
    "÷",
    "^_^",
    "o_O",
    "¯\\_(ツ)_/¯",
]
CONTRACTIONS = [
    "it's",
    "don't",
    "they're",
    "we've",
    "I'm",
    "you'll",
    "he'd",
    "IT'S",
    "DON'T",
    "THEY'RE",
    "i'M",
    "can't",
    "won't",
    "o'clock",
    "rock'n'roll",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "it’s",
    "it`s",
    "it´s",
    "itʼs",
    "'S",
    "'ſ",
    "''s",
    "'sa",
    "s'",
    "dogs'",
    "'90s",
    "'tis",
    "y'all",
    "ma'am",
    "'''",
    "'quoted'",
    "L'Oréal",
    "d'Artagnan",
    "O'Neill",
]
NUMBERS = [
    "2023",
    "3.14",
    "1,000,000",
    "10x",
    "4k",
    "1st",
    "2nd",
    "3rd",
    "100%",
    "-5",
    "+7",
    "1/2",
    "½",
    "²",
    "Ⅻ",
    "ⅷ",
    "٣",
    "१२३",
    "１２３",
    "0.001",
    "1e10",
    "007",
    "24/7",
    "9:30",
    "12:00pm",
    "$100",
    "€5",
    "No.5",
    "#1",
    "50°C",
    "6'2\"",
    "1990s",
    "42",
    "3-4",
    "v2.0",
    "ipv6",
    "h264",
    "⑤",
    "㊿",
    "𝟕",
]
CONTROLS = [
    "\x00",
    "\x01",
    "\x07",
    "\x08",
    "\x0b",
    "\x0c",
    "\x0e",
    "\x1b",
    "\x1b[31m",
    "\x1b[0m",
    "\x1c",
    "\x1f",
    "\x7f",
    "\x80",
    "\x85",
    "\x92",
    "\x93",
    "\x9f",
    "\ufeff",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u202e",
    "\u2028",
    "\u2029",
    "\u2060",
    "\u206a",
    "\ufff9",
    "\ufffc",
    "\ufffd",
    "\U000e0041",
    "\ud83d",
    "\udca9",
    "\ue000",
    "\uf8ff",
    "\u0300",
    "\u0345",
]
SPACES = [
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "\xa0",
    "\u3000",
    "\u2003",
    "\u2009",
    "\u202f",
    "\u1680",
    " \n\t ",
    "\x0c",
    "\u00a0\u00a0",
]
CASE_TRAPS = [
    "İstanbul",
    "ISTANBUL",
    "ıi",
    "İI",
    "STRASSE",
    "Straße",
    "ẞ",
    "ΣΊΣΥΦΟΣ",
    "ΟΔΥΣΣΕΥΣ.",
    "Σ",
    "ΑΣ",
    "ſ",
    "ſtraße",
    "K",
    "Å",
    "Ω",
    "ǅ",
    "ﬀ",
    "ꭰ",
    "Ꭰ",
    "ᲐᲑᲒ",
    "ŉ",
    "ΐ",
    "ﬓ",
    "İ̇",
    "Ⓐⓑ",
    "ꞵ",
    "Ǳ",
    "ǲ",
]
SPECIALS = [
    "<start_of_text>",
    "<end_of_text>",
    "<START_OF_TEXT>",
    "<End_Of_Text>",
    "!!<end_of_text>",
    "<start_of_text>!!",
    "<ſtart_of_text>",
    "<|endoftext|>",
    "<|startoftext|>",
    "</w>",
    "a</w>b",
    "<w>",
    "<start_of_text><end_of_text>",
    "x<end_of_text>y",
    "<start_of_text",
    "start_of_text>",
]
FUZZ_RANGES = [
    (0x20, 0x7E),
    (0xA0, 0x24F),
    (0x250, 0x36F),
    (0x370, 0x52F),
    (0x590, 0x6FF),
    (0x900, 0xDFF),
    (0x1100, 0x11FF),
    (0x1E00, 0x1FFF),
    (0x2000, 0x2BFF),
    (0x3000, 0x30FF),
    (0x4E00, 0x4E80),
    (0xAC00, 0xAC80),
    (0xFB00, 0xFB4F),
    (0xFE00, 0xFE6F),
    (0xFF00, 0xFFEF),
    (0x10400, 0x1044F),
    (0x1D400, 0x1D7FF),
    (0x1F300, 0x1FAFF),
    (0x20000, 0x20050),
    (0xE0000, 0xE007F),
]


def _caption(rng: random.Random) -> str:
    words = [rng.choice(OPENERS) + rng.choice(DETERMINERS), rng.choice(ADJECTIVES), rng.choice(NOUNS)]
    if rng.random() < 0.7:
        words += [
            rng.choice(VERBS),
            rng.choice(PREPOSITIONS),
            "the",
            rng.choice(ADJECTIVES),
            rng.choice(NOUNS),
        ]
    if rng.random() < 0.3:
        words += ["and", rng.choice(DETERMINERS), rng.choice(NOUNS)]
    if rng.random() < 0.15:
        words.insert(
            rng.randrange(len(words)),
            "".join(rng.choice("bcdfghjklmnpqrstvwxz aeiou") for _ in range(rng.randint(4, 14))).strip()
            or "zq",
        )  # made-up words exercise BPE on unseen strings
    text = " ".join(words) + rng.choice(ENDINGS)
    style = rng.random()
    if style < 0.25:
        text = text.capitalize()
    elif style < 0.32:
        text = text.upper()
    elif style < 0.40:
        text = text.title()
    return text


def _sprinkle(rng: random.Random, base: str, pool: list[str], n: int) -> str:
    parts = base.split(" ")
    for _ in range(n):
        item = rng.choice(pool)
        pos = rng.randrange(len(parts) + 1)
        glue = rng.random()
        if glue < 0.5 or not parts:
            parts.insert(pos, item)
        else:  # glued to a neighbouring word
            idx = min(pos, len(parts) - 1)
            parts[idx] = parts[idx] + item if glue < 0.75 else item + parts[idx]
    return " ".join(parts)


def _mojibake(rng: random.Random, text: str) -> str:
    raw = text.encode("utf-8")
    codec = rng.choice(["latin-1", "cp1252", "cp1252", "mac_roman", "cp1251"])
    out = raw.decode(codec, errors="replace")
    if rng.random() < 0.2:  # doubly broken
        out = out.encode("utf-8").decode("cp1252", errors="replace")
    return out


def _fuzz(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.randint(1, 40)):
        lo, hi = rng.choice(FUZZ_RANGES)
        chars.append(" " if rng.random() < 0.12 else chr(rng.randint(lo, hi)))
    return "".join(chars)


def _long(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.6:
        return " ".join(_caption(rng) for _ in range(rng.randint(4, 12)))
    if kind < 0.75:
        return rng.choice(["a", "ab", "xyz", "!", "7", "猫", "😀", "la"]) * rng.randint(60, 400)
    if kind < 0.9:
        return " ".join(rng.choice(NOUNS + NUMBERS + PUNCT) for _ in range(rng.randint(70, 200)))
    return "https://example.com/" + "/".join(rng.choice(NOUNS) for _ in range(rng.randint(20, 60)))


def make_corpus(n: int = N_ROWS, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    fixed = [
        "",
        " ",
        "\n",
        "\t \n",
        "a",
        "A",
        "'",
        "<",
        ">",
        "&",
        "!!!",
        "...",
        "</w>",
        "0",
        "ß",
        "İ",
        "Σ",
        "😀",
        "\x00",
        "\ufeff",
        "&amp;",
        "  leading and trailing  ",
    ]
    rows = list(fixed)
    kinds = [  # (weight, generator)
        (40, lambda: _caption(rng)),
        (5, lambda: _long(rng)),
        (9, lambda: _sprinkle(rng, _caption(rng), FOREIGN, 1) if rng.random() < 0.5 else rng.choice(FOREIGN)),
        (5, lambda: _sprinkle(rng, _caption(rng), EMOJI, rng.randint(1, 4))),
        (6, lambda: _sprinkle(rng, _caption(rng), ENTITIES, rng.randint(1, 3))),
        (5, lambda: _sprinkle(rng, _caption(rng), PUNCT, rng.randint(1, 4))),
        (5, lambda: _sprinkle(rng, _caption(rng), CONTRACTIONS, rng.randint(1, 3))),
        (4, lambda: _sprinkle(rng, _caption(rng), NUMBERS, rng.randint(1, 4))),
        (4, lambda: _sprinkle(rng, _caption(rng), CONTROLS, rng.randint(1, 3))),
        (4, lambda: _sprinkle(rng, _caption(rng), SPACES, rng.randint(1, 4))),
        (4, lambda: _sprinkle(rng, _caption(rng), CASE_TRAPS, rng.randint(1, 3))),
        (1.5, lambda: _sprinkle(rng, _caption(rng), SPECIALS, rng.randint(1, 2))),
        (2, lambda: _mojibake(rng, rng.choice(FOREIGN + [_sprinkle(rng, _caption(rng), PUNCT + EMOJI, 2)]))),
        (1, lambda: unicodedata.normalize(rng.choice(["NFD", "NFKD"]), rng.choice(FOREIGN))),
        (1, lambda: "<b>" + _sprinkle(rng, _caption(rng), ENTITIES, 2) + "</b>\n" + rng.choice(ENTITIES)),
        (4.5, lambda: _fuzz(rng)),
    ]
    weights = [w for w, _ in kinds]
    while len(rows) < n:
        rows.append(rng.choices(kinds, weights)[0][1]())
    return rows


def pack(ids: list[list[int]], ctx: int, sot: int, eot: int) -> np.ndarray:
    """The padded/truncated layout the tests expect from the golden ids (checked against open_clip)."""
    out = np.zeros((len(ids), ctx), dtype=np.int64)
    for i, row in enumerate(ids):
        row = [sot] + row[: ctx - 2] + [eot]
        out[i, : len(row)] = row
    return out


def main() -> None:
    from open_clip.tokenizer import SimpleTokenizer
    from tqdm import tqdm

    # Through JSON first: a lone high + lone low surrogate pair reads back as one character.
    corpus = [json.loads(json.dumps(text)) for text in make_corpus()]
    tokenizer = SimpleTokenizer()
    ids = [tokenizer.encode(text) for text in tqdm(corpus, desc="open_clip encode")]
    for ctx in (77, 16, 5, 2):
        expected = tokenizer(corpus, context_length=ctx).numpy()
        assert (pack(ids, ctx, tokenizer.sot_token_id, tokenizer.eot_token_id) == expected).all(), ctx
    with gzip.open(HERE / "corpus.jsonl.gz", "wt", encoding="ascii", compresslevel=9) as f:
        for text in corpus:
            f.write(json.dumps(text) + "\n")
    counts = np.array([len(r) for r in ids], dtype=np.int32)
    flat = np.array([t for r in ids for t in r], dtype=np.uint16)
    np.savez_compressed(HERE / "golden.npz", ids=flat, counts=counts)
    print(f"{len(corpus)} rows, {len(flat)} ids, {int((counts > 75).sum())} rows beyond 77 tokens")


if __name__ == "__main__":
    main()
