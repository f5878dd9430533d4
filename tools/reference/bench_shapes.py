#!/usr/bin/env python3
"""PyTorch side of `npm run bench:train -- --model-shape <name>` (issue 13): LoRA training
steps on a real model shape, read from the same config.json the tfjs run trains, timed on
the CPU, with the process's peak RSS.

Hand-written modules, no transformers: GPT-2 (LayerNorm, Conv1D weights [in, out], tanh
GELU, learned positions, tied head) and Llama (RMSNorm, RoPE rotate-half, grouped-query
attention, SwiGLU, tied or separate head). LoRA as PEFT does it on the named targets:
y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ, A ~ U(±1/√in), B = 0. Frozen weights are held in float32
and computed in float32, whatever the checkpoint's dtype: PyTorch's CPU bf16 products are
far slower than f32 ones, so f32 is what a CPU user of PyTorch runs. Weights are random
N(0, 0.02) made in place, not read from the file, so no load-time copy inflates the peak.

Each step is the trainer's: forward, cross-entropy on the completion tokens (all but the
first `--prompt-tokens`), backward, global-norm clipping to 1, AdamW over LoRA parameters
only. Dropout 0.05 on the LoRA input (the CLI's default).

Prints one JSON object: {"tokens_per_second", "step_ms", "threads", "peak_rss_mb",
"parameters", "trainable", "torch_version", "device"}; with `--device cuda` also
"peak_gpu_mb" (torch.cuda.max_memory_allocated) and "gpu_name". Run one process per thread
count: peak RSS only grows within a process. On a GPU the weights stay float32 too (no
autocast), the arithmetic the tfjs webgpu backend runs: the GPU bundle's check
(tools/gpu-bundle) compares the two on the same GPU.

    /usr/bin/python3 tools/reference/bench_shapes.py --config <dir>/config.json \
        --batch-size 4 --seq-len 256 --targets c_attn --threads 1
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F


class LoraLinear(torch.nn.Module):
    """A frozen linear layer (nn.Linear [out, in] or GPT-2 Conv1D [in, out]) with LoRA."""

    def __init__(self, n_in, n_out, bias, conv1d, lora, g):
        super().__init__()
        shape = (n_in, n_out) if conv1d else (n_out, n_in)
        self.conv1d = conv1d
        self.weight = torch.nn.Parameter(torch.empty(shape).normal_(0, 0.02, generator=g), requires_grad=False)
        self.bias = torch.nn.Parameter(torch.zeros(n_out), requires_grad=False) if bias else None
        self.lora = lora is not None
        if self.lora:
            r, alpha, dropout = lora
            bound = 1 / math.sqrt(n_in)
            self.lora_A = torch.nn.Parameter(torch.empty(r, n_in).uniform_(-bound, bound, generator=g))
            self.lora_B = torch.nn.Parameter(torch.zeros(n_out, r))
            self.scaling = alpha / r
            self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x):  # x [B, T, in] -> [B, T, out]
        w = self.weight.t() if self.conv1d else self.weight
        y = F.linear(x, w, self.bias)
        if self.lora:
            y = y + (self.dropout(x) @ self.lora_A.t()) @ self.lora_B.t() * self.scaling
        return y


def causal_mask(t):  # [T, T]: 0 on and below the diagonal, -inf above
    return torch.triu(torch.full((t, t), float("-inf")), diagonal=1)


class Gpt2Block(torch.nn.Module):
    def __init__(self, cfg, linear):
        super().__init__()
        c, inner = cfg["n_embd"], cfg.get("n_inner") or 4 * cfg["n_embd"]
        self.h = cfg["n_head"]
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.ln_1 = torch.nn.LayerNorm(c, eps=eps)
        self.c_attn = linear("attn.c_attn", c, 3 * c, True, True)
        self.c_proj = linear("attn.c_proj", c, c, True, True)
        self.ln_2 = torch.nn.LayerNorm(c, eps=eps)
        self.c_fc = linear("mlp.c_fc", c, inner, True, True)
        self.mlp_proj = linear("mlp.c_proj", inner, c, True, True)

    def forward(self, x, mask):  # x [B, T, C]
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))  # [B, H, T, D]
        att = (q @ k.transpose(-1, -2)) / math.sqrt(c // self.h) + mask  # [B, H, T, T]
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt2(torch.nn.Module):
    def __init__(self, cfg, linear, g):
        super().__init__()
        c = cfg["n_embd"]
        self.wte = torch.nn.Parameter(torch.empty(cfg["vocab_size"], c).normal_(0, 0.02, generator=g))
        self.wpe = torch.nn.Parameter(torch.empty(cfg["n_positions"], c).normal_(0, 0.02, generator=g))
        self.blocks = torch.nn.ModuleList(
            Gpt2Block(cfg, lambda name, *a, i=i: linear(f"h.{i}.{name}", *a)) for i in range(cfg["n_layer"])
        )
        self.ln_f = torch.nn.LayerNorm(c, eps=cfg.get("layer_norm_epsilon", 1e-5))

    def forward(self, ids):  # ids [B, T] -> logits [B, T, V]
        t = ids.shape[1]
        mask = causal_mask(t).to(ids.device)
        x = self.wte[ids] + self.wpe[:t]
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x) @ self.wte.t()


class RmsNorm(torch.nn.Module):
    def __init__(self, c, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(c))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LlamaBlock(torch.nn.Module):
    def __init__(self, cfg, linear):
        super().__init__()
        c, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.h, self.kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        self.d = cfg.get("head_dim") or c // self.h
        eps = cfg.get("rms_norm_eps", 1e-6)
        bias = cfg.get("attention_bias", False)
        self.input_layernorm = RmsNorm(c, eps)
        self.q_proj = linear("self_attn.q_proj", c, self.h * self.d, bias, False)
        self.k_proj = linear("self_attn.k_proj", c, self.kv * self.d, bias, False)
        self.v_proj = linear("self_attn.v_proj", c, self.kv * self.d, bias, False)
        self.o_proj = linear("self_attn.o_proj", self.h * self.d, c, bias, False)
        self.post_attention_layernorm = RmsNorm(c, eps)
        mlp_bias = cfg.get("mlp_bias", False)
        self.gate_proj = linear("mlp.gate_proj", c, i, mlp_bias, False)
        self.up_proj = linear("mlp.up_proj", c, i, mlp_bias, False)
        self.down_proj = linear("mlp.down_proj", i, c, mlp_bias, False)

    def forward(self, x, mask, cos, sin):  # x [B, T, C]; cos, sin [T, D]
        b, t, _ = x.shape
        hx = self.input_layernorm(x)
        q = self.q_proj(hx).view(b, t, self.h, self.d).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(hx).view(b, t, self.kv, self.d).transpose(1, 2)  # [B, KV, T, D]
        v = self.v_proj(hx).view(b, t, self.kv, self.d).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(self.h // self.kv, dim=1)  # [B, H, T, D]
        v = v.repeat_interleave(self.h // self.kv, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.d) + mask  # [B, H, T, T]
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, self.h * self.d)
        x = x + self.o_proj(y)
        hx = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(hx)) * self.up_proj(hx))


class Llama(torch.nn.Module):
    def __init__(self, cfg, linear, g):
        super().__init__()
        c, v = cfg["hidden_size"], cfg["vocab_size"]
        self.embed_tokens = torch.nn.Parameter(torch.empty(v, c).normal_(0, 0.02, generator=g))
        self.layers = torch.nn.ModuleList(
            LlamaBlock(cfg, lambda name, *a, i=i: linear(f"layers.{i}.{name}", *a))
            for i in range(cfg["num_hidden_layers"])
        )
        self.norm = RmsNorm(c, cfg.get("rms_norm_eps", 1e-6))
        self.tied = cfg.get("tie_word_embeddings", False)
        self.lm_head = None if self.tied else linear("lm_head", c, v, False, False)
        d = cfg.get("head_dim") or c // cfg["num_attention_heads"]
        # Plain RoPE frequencies: llama3 scaling changes their values, not the work.
        self.inv_freq = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2).float() / d))

    def forward(self, ids):  # ids [B, T] -> logits [B, T, V]
        t = ids.shape[1]
        freqs = torch.outer(torch.arange(t, device=ids.device).float(), self.inv_freq.to(ids.device))  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
        cos, sin, mask = emb.cos(), emb.sin(), causal_mask(t).to(ids.device)
        x = self.embed_tokens[ids]
        for layer in self.layers:
            x = layer(x, mask, cos, sin)
        x = self.norm(x)
        return x @ self.embed_tokens.t() if self.tied else self.lm_head(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, help="a Hugging Face config.json")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16, help="positions without loss")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--dropout", type=float, default=0.05)
    parser.add_argument("--targets", default="", help="comma-separated; default PEFT's per architecture")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU comparison")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with open(args.config) as f:
        cfg = json.load(f)
    gpt2 = cfg["model_type"] == "gpt2"
    targets = [t for t in args.targets.split(",") if t] or (["c_attn"] if gpt2 else ["q_proj", "v_proj"])
    g = torch.Generator().manual_seed(0)

    def linear(path, n_in, n_out, bias, conv1d):
        lora = (args.r, args.alpha, args.dropout) if path.split(".")[-1] in targets else None
        return LoraLinear(n_in, n_out, bias, conv1d, lora, g)

    with torch.no_grad():
        model = (Gpt2 if gpt2 else Llama)(cfg, linear, g)
    device = torch.device(args.device)
    model.to(device)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    vocab = cfg["vocab_size"]
    ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(1))
    labels = ids[:, 1:].clone()
    labels[:, : max(args.prompt_tokens - 1, 0)] = -100  # the prompt carries no loss
    ids, labels = ids.to(device), labels.to(device)
    cuda = device.type == "cuda"

    def step():
        logits = model(ids)  # [B, T, V]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels.reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    model.train()
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()  # float(loss) already waits; this keeps the timing honest
    seconds = (time.perf_counter() - started) / args.steps
    print(json.dumps({
        "tokens_per_second": args.batch_size * args.seq_len / seconds,
        "step_ms": seconds * 1000,
        "threads": torch.get_num_threads(),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in params),
        "torch_version": torch.__version__,
        "device": str(device),
        **({"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
            "gpu_name": torch.cuda.get_device_name(device)} if cuda else {}),
    }))


if __name__ == "__main__":
    main()
