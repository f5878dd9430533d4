"""Byte-level BPE (GPT-2 style) trainer/encoder that writes a Hugging Face `tokenizer.json`.

No `tokenizers`/`regex` packages are needed: the ByteLevel pre-tokenizer regex
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
is rebuilt for Python's `re` with explicit \\p{L} / \\p{N} classes taken from
`unicodedata`, and \\s is the JavaScript/Oniguruma whitespace set, so the Python
encoder produces the same ids as @huggingface/tokenizers (JS) and the Rust crate.
"""
import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]

_WS = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


def _class_for(prefix):
    ranges, start, prev = [], None, None
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith(prefix):
            if start is None:
                start = prev = cp
            elif cp == prev + 1:
                prev = cp
            else:
                ranges.append((start, prev))
                start = prev = cp
    if start is not None:
        ranges.append((start, prev))
    esc = lambda c: re.escape(chr(c))  # noqa: E731
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


_L = _class_for("L")
_N = _class_for("N")
PRETOKENIZE_RE = re.compile(
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{_L}]+| ?[{_N}]+| ?[^{_WS}{_L}{_N}]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


_BS, _CS = bytes_to_unicode()
BYTE_ENCODER = dict(zip(_BS, _CS))
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}


def pretokenize(text):
    return [
        "".join(BYTE_ENCODER[b] for b in piece.encode("utf-8"))
        for piece in PRETOKENIZE_RE.findall(text)
    ]


def train_bpe(texts, vocab_size, log=print):
    """Learn merges so that 256 byte symbols + merges + specials == vocab_size.
    Ties broken deterministically (highest count, then smallest pair)."""
    n_merges = vocab_size - 256 - len(SPECIAL_TOKENS)
    wc = Counter()
    for t in texts:
        wc.update(pretokenize(t))
    words = [list(w) for w in wc]
    freqs = [wc[w] for w in wc]
    log(f"[bpe] {sum(freqs)} pre-tokens, {len(words)} unique")
    pairs = Counter()
    where = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += f
            where[(a, b)].add(i)
    merges = []
    seen = set(_CS)  # two merges can yield the same string; count distinct tokens
    m = 0
    while len(seen) < 256 + n_merges:
        m += 1
        best_c = max(pairs.values())
        best = min(p for p, c in pairs.items() if c == best_c)
        merges.append(best)
        a, b = best
        new = a + b
        seen.add(new)
        for i in list(where[best]):
            w, f = words[i], freqs[i]
            for x, y in zip(w, w[1:]):
                pairs[(x, y)] -= f
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += f
                where[(x, y)].add(i)
        del where[best]
        pairs.pop(best, None)
        if m % 200 == 0:
            log(f"[bpe] merge {m}/{n_merges}: {a!r}+{b!r} count={best_c}")
    return merges


class ByteLevelBPE:
    def __init__(self, merges, specials=SPECIAL_TOKENS):
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.vocab = {c: i for i, c in enumerate(_CS)}
        for a, b in self.merges:
            self.vocab.setdefault(a + b, len(self.vocab))
        self.specials = {}
        for s in specials:
            self.specials[s] = len(self.vocab)
            self.vocab[s] = len(self.vocab)
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self._cache = {}
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in specials) + ")") if specials else None

    @property
    def vocab_size(self):
        return len(self.vocab)

    def _bpe(self, word):
        if word in self._cache:
            return self._cache[word]
        w = list(word)
        while len(w) > 1:
            best, bi = None, -1
            for i in range(len(w) - 1):
                r = self.ranks.get((w[i], w[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            a, b = self.merges[best]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            w = out
        self._cache[word] = w
        return w

    def encode(self, text, allow_special=True):
        ids = []
        parts = self._special_re.split(text) if (allow_special and self._special_re) else [text]
        for part in parts:
            if not part:
                continue
            if allow_special and part in self.specials:
                ids.append(self.specials[part])
                continue
            for pt in pretokenize(part):
                ids.extend(self.vocab[t] for t in self._bpe(pt))
        return ids

    def decode(self, ids, skip_special=False):
        out = []
        buf = bytearray()
        for i in ids:
            t = self.id_to_token[int(i)]
            if t in self.specials:
                if buf:
                    out.append(buf.decode("utf-8", errors="replace"))
                    buf = bytearray()
                if not skip_special:
                    out.append(t)
                continue
            buf.extend(BYTE_DECODER[c] for c in t)
        if buf:
            out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def to_hf_json(self):
        added = [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for s, i in self.specials.items()
        ]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": self.vocab,
                "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }

    def tokenizer_config(self, model_max_length):
        eos = SPECIAL_TOKENS[0]
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": eos,
            "eos_token": eos,
            "unk_token": None,
            "pad_token": SPECIAL_TOKENS[1],
            "add_bos_token": False,
            "add_eos_token": False,
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": model_max_length,
            "added_tokens_decoder": {
                str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
                for s, i in self.specials.items()
            },
        }

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_json(), f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
        specials = [t["content"] for t in sorted(j["added_tokens"], key=lambda t: t["id"])]
        tok = cls(merges, specials)
        assert tok.vocab == j["model"]["vocab"], "vocab mismatch on reload"
        return tok
