"""Public-domain English corpus read straight from the installed npm packages."""
import glob
import os
import re

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NM = os.path.join(ROOT, "node_modules", "@stdlib")

_NORMALIZE = {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2011": "-"}
_NORM_RE = re.compile("|".join(map(re.escape, _NORMALIZE)))


def normalize(text):
    text = _NORM_RE.sub(lambda m: _NORMALIZE[m.group(0)], text)
    text = text.replace("\r\n", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return text.strip()


def _chapter_key(p):
    m = re.search(r"chapter_(\d+)", p)
    return (1, int(m.group(1))) if m else (0 if "etymology" in p or "extracts" in p else 2, p)


def load_documents():
    """Returns a list of (source, name, text), in a fixed order."""
    docs = []
    md = os.path.join(NM, "datasets-moby-dick", "data")
    files = [p for p in glob.glob(os.path.join(md, "*.txt"))
             if os.path.basename(p) not in ("data.txt", "contents.txt")]
    for p in sorted(files, key=_chapter_key):
        with open(p, encoding="utf-8") as f:
            docs.append(("moby-dick", os.path.basename(p)[:-4], normalize(f.read())))
    sd = os.path.join(NM, "datasets-sotu", "data")
    for p in sorted(glob.glob(os.path.join(sd, "*.txt"))):
        with open(p, encoding="utf-8") as f:
            docs.append(("sotu", os.path.basename(p)[:-4], normalize(f.read())))
    if not docs:
        raise SystemExit(f"no corpus found under {NM}; run npm install first")
    return docs


def split_documents(docs, val_every=25):
    """Deterministic split: every `val_every`-th document (in load order) is validation."""
    train, val = [], []
    for i, d in enumerate(docs):
        (val if i % val_every == val_every - 1 else train).append(d)
    return train, val
