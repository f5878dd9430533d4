#!/usr/bin/env python3
"""PyTorch side of `npm run bench:train`: one LoRA training step of the reference GPT-2
config (lora on c_attn, AdamW on the adapter only, global-norm clipping, completion
cross-entropy), timed on the CPU in float32, the same work the tfjs trainer does per step.

Prints one JSON object: {"tokens_per_second", "step_ms", "threads", "torch_version"}.

Run (Debian: apt-get install python3-torch libopenblas0-pthread):
    /usr/bin/python3 tools/reference/bench_train.py --steps 10
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class LoraConv1D(torch.nn.Module):
    """GPT-2 Conv1D (weight [in, out]) with PEFT's LoRA branch: x·W + b + s·(x·Aᵀ)·Bᵀ."""

    def __init__(self, n_in, n_out, r, alpha, generator):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_in, n_out, generator=generator) * 0.02, requires_grad=False)
        self.bias = torch.nn.Parameter(torch.zeros(n_out), requires_grad=False)
        self.r = r
        if r > 0:
            bound = 1 / math.sqrt(n_in)
            self.lora_A = torch.nn.Parameter((torch.rand(r, n_in, generator=generator) * 2 - 1) * bound)
            self.lora_B = torch.nn.Parameter(torch.zeros(n_out, r))
            self.scaling = alpha / r

    def forward(self, x):
        y = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)
        if self.r > 0:
            y = y + (x @ self.lora_A.t()) @ self.lora_B.t() * self.scaling
        return y


class Block(torch.nn.Module):
    def __init__(self, c, h, r, alpha, g):
        super().__init__()
        self.h = h
        self.ln_1 = torch.nn.LayerNorm(c)
        self.c_attn = LoraConv1D(c, 3 * c, r, alpha, g)
        self.c_proj = LoraConv1D(c, c, 0, alpha, g)
        self.ln_2 = torch.nn.LayerNorm(c)
        self.c_fc = LoraConv1D(c, 4 * c, 0, alpha, g)
        self.mlp_proj = LoraConv1D(4 * c, c, 0, alpha, g)
        for p in list(self.ln_1.parameters()) + list(self.ln_2.parameters()):
            p.requires_grad_(False)

    def forward(self, x, mask):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(c // self.h) + mask
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(gelu_new(self.c_fc(self.ln_2(x))))


class Gpt2Lora(torch.nn.Module):
    def __init__(self, vocab, c, layers, heads, positions, r, alpha, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.wte = torch.nn.Parameter(torch.randn(vocab, c, generator=g) * 0.02, requires_grad=False)
        self.wpe = torch.nn.Parameter(torch.randn(positions, c, generator=g) * 0.01, requires_grad=False)
        self.blocks = torch.nn.ModuleList(Block(c, heads, r, alpha, g) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(c)
        for p in self.ln_f.parameters():
            p.requires_grad_(False)

    def forward(self, ids):
        t = ids.shape[1]
        mask = torch.triu(torch.full((t, t), -1e9), diagonal=1)
        x = self.wte[ids] + self.wpe[:t]
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x) @ self.wte.t()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Gpt2Lora(args.vocab_size, args.n_embd, args.n_layer, args.n_head, args.seq_len, args.r, 2 * args.r, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), generator=g)

    def step():
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, args.vocab_size), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    for _ in range(args.warmup):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - started) / args.steps
    print(json.dumps({
        "tokens_per_second": args.batch_size * args.seq_len / seconds,
        "step_ms": seconds * 1000,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }))


if __name__ == "__main__":
    main()
