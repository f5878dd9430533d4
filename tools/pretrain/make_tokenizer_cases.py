"""Writes tokenizer_cases.json (text + Python ids) for check-tokenizer.mjs.

    /usr/bin/python3 tools/pretrain/make_tokenizer_cases.py [tokenizer.json] [out.json]
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bytelevel_bpe import ByteLevelBPE  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [
    "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse.",
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "The State of the Union is strong. We can't stop now; they'll see it, won't they?",
    "In 1790 the debt was $75,463,476.52 (about 40% of GDP).",
    "  Leading spaces,\ttabs\tand\n\nnewlines   and trailing spaces   ",
    "Spell phonetically: c a t\nPhonemes: K AE T\n\nSpell phonetically: s h i p\nPhonemes: SH IH P",
    "Unicode: café, naïve, Œuvre, ημέρα, 東京, emoji 🐋!",
    "<|endoftext|>The whale<|endoftext|> surfaced.",
    "I'M SHOUTING, you're whispering; we've, he'd, she'll, it's 'quoted'.",
]


def main():
    tok_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "models", "lorafleet-tiny-llama", "tokenizer.json")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "tokenizer_cases.json")
    tok = ByteLevelBPE.load(tok_path)
    cases = []
    for t in CASES:
        ids = tok.encode(t)
        assert tok.decode(ids) == t, t
        cases.append({"text": t, "ids": ids})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
