#!/usr/bin/env python3
"""Reference G2P measurements for the demo (pure PyTorch, mirrors what lorafleet does).

    /usr/bin/python3 tools/pretrain/g2p_eval.py --model models/lorafleet-tiny-llama --data demo/g2p \
        [--lora-epochs 4] [--out /tmp/g2p_results.json]

1. base model, 0-shot and 5-shot (demo/g2p/fewshot.json prefix) on test.jsonl: greedy decoding,
   stop at the first newline or <|endoftext|>; exact match and phoneme error rate (PER).
2. optional LoRA fine-tune (PEFT semantics: r=8, alpha=16, dropout 0.05, q_proj+v_proj, completion-only
   loss on [prompt][completion][EOS], no BOS - exactly like libs/data encodeExample with
   add_bos_token=false), then 0-shot eval of base+adapter on test.jsonl.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bytelevel_bpe import ByteLevelBPE  # noqa: E402
from llama import LoRALinear, load_model  # noqa: E402
from pretrain import generate  # noqa: E402


def read_jsonl(p):
    with open(p, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def score(preds, refs):
    exact = sum(p.split() == r.split() for p, r in zip(preds, refs))
    errs = sum(edit_distance(p.split(), r.split()) for p, r in zip(preds, refs))
    total = sum(len(r.split()) for r in refs)
    return {"exact_match": exact / len(refs), "per": errs / total, "n": len(refs)}


def run_eval(model, tok, rows, prefix="", max_new_tokens=40, limit=None):
    eos = tok.specials["<|endoftext|>"]
    preds = []
    rows = rows[:limit] if limit else rows
    for r in rows:
        ids = tok.encode(prefix + r["prompt"], allow_special=False)
        out = generate(model, ids, max_new_tokens, stop_ids=(eos,), stop_fn=lambda t: "\n" in tok.decode(t))
        text = tok.decode(out).split("\n")[0]
        preds.append(text.strip())
    return score(preds, [r["completion"] for r in rows]), preds


def add_lora(model, r, alpha, dropout, targets):
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers:
        for name in targets:
            parent = layer.self_attn if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else layer.mlp
            setattr(parent, name, LoRALinear(getattr(parent, name), r, alpha, dropout))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable


def encode_example(tok, row):
    eos = tok.specials["<|endoftext|>"]
    p = tok.encode(row["prompt"], allow_special=False)
    c = tok.encode(row["completion"], allow_special=False) + [eos]
    return p + c, [0] * len(p) + [1] * len(c)


def lora_finetune(model, tok, train_rows, args, log):
    examples = [encode_example(tok, r) for r in train_rows]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lora_lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(examples) / args.lora_batch)
    total = steps_per_epoch * args.lora_epochs
    rnd = random.Random(args.seed)
    step = 0
    model.train()
    t0 = time.time()
    for ep in range(args.lora_epochs):
        order = list(range(len(examples)))
        rnd.shuffle(order)
        for b in range(steps_per_epoch):
            batch = [examples[i] for i in order[b * args.lora_batch:(b + 1) * args.lora_batch]]
            L = max(len(x[0]) for x in batch)
            ids = torch.full((len(batch), L), tok.specials["<|pad|>"], dtype=torch.long)
            labels = torch.full((len(batch), L), -100, dtype=torch.long)
            for i, (x, m) in enumerate(batch):
                ids[i, :len(x)] = torch.tensor(x)
                lab = torch.tensor([t if k else -100 for t, k in zip(x, m)])
                labels[i, :len(x)] = lab
            lr = args.lora_lr * min(1.0, (step + 1) / args.lora_warmup) * (0.5 * (1 + math.cos(math.pi * step / total)))
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(ids)  # right padding + causal mask: pads never affect real positions
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 25 == 0 or step == 1:
                log(f"lora epoch {ep + 1} step {step}/{total} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t0:.0f}s")
    model.eval()
    return {"steps": total, "seconds": round(time.time() - t0, 1), "final_loss": round(loss.item(), 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/lorafleet-tiny-llama")
    ap.add_argument("--data", default="demo/g2p")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lora-epochs", type=int, default=0)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-alpha", type=int, default=16)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--lora-lr", type=float, default=2e-3)
    ap.add_argument("--lora-batch", type=int, default=16)
    ap.add_argument("--lora-warmup", type=int, default=20)
    ap.add_argument("--lora-targets", default="q_proj,v_proj")
    ap.add_argument("--skip-base", action="store_true")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    def log(m):
        print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)

    model = load_model(args.model)
    tok = ByteLevelBPE.load(os.path.join(args.model, "tokenizer.json"))
    rows = read_jsonl(os.path.join(args.data, f"{args.split}.jsonl"))
    with open(os.path.join(args.data, "fewshot.json")) as f:
        prefix = json.load(f)["prefix"]
    res = {"split": args.split}
    mnt = args.max_new_tokens
    if not args.skip_base:
        t = time.time()
        res["base_0shot"], _ = run_eval(model, tok, rows, "", mnt, limit=args.limit)
        log(f"base 0-shot: {res['base_0shot']} ({time.time() - t:.0f}s)")
        t = time.time()
        res["base_5shot"], preds5 = run_eval(model, tok, rows, prefix, mnt, limit=args.limit)
        log(f"base 5-shot: {res['base_5shot']} ({time.time() - t:.0f}s)")
        res["base_5shot_examples"] = [{"prompt": r["prompt"], "ref": r["completion"].strip(), "pred": p}
                                      for r, p in list(zip(rows, preds5))[:8]]
    if args.lora_epochs:
        trainable = add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_targets.split(","))
        total = sum(p.numel() for p in model.parameters())
        log(f"trainable params: {trainable} || all params: {total} || trainable%: {100 * trainable / total:.4f}")
        train_rows = read_jsonl(os.path.join(args.data, "train.jsonl"))
        res["lora"] = {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                       "targets": args.lora_targets, "lr": args.lora_lr, "batch": args.lora_batch,
                       "epochs": args.lora_epochs, "trainable": trainable,
                       **lora_finetune(model, tok, train_rows, args, log)}
        t = time.time()
        res["adapter_0shot"], preds = run_eval(model, tok, rows, "", mnt, limit=args.limit)
        log(f"adapter 0-shot: {res['adapter_0shot']} ({time.time() - t:.0f}s)")
        res["adapter_examples"] = [{"prompt": r["prompt"], "ref": r["completion"].strip(), "pred": p}
                                   for r, p in list(zip(rows, preds))[:8]]
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
