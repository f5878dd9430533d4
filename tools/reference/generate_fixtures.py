#!/usr/bin/env python3
"""Independent PyTorch reference for lora-core's parity tests.

Builds tiny random GPT-2 and Llama models in Hugging Face layout (config.json +
model.safetensors), a PEFT adapter for each, and the expected logits, loss and LoRA
gradients, all computed in float64 from the float32 weights. Nothing here imports
transformers or peft: the modules below are written from the published architectures
(transformers v4.46 modeling_gpt2.py / modeling_llama.py, peft v0.17.0 tuners/lora) so the
TypeScript implementation is checked against a second, independent implementation.

Run (Debian: apt-get install python3-torch):
    /usr/bin/python3 tools/reference/generate_fixtures.py libs/lora-core/test/fixtures

CI never runs this script; the tests only read the committed output.
"""
import json
import math
import os
import struct
import sys

import torch

torch.set_default_dtype(torch.float64)

# --------------------------------------------------------------------------- safetensors


def _dtype_name(t):
    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}[t.dtype]


def _raw_bytes(t):
    t = t.contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """Writes the format by hand (the safetensors package is not a dependency): sorted
    names, compact JSON header padded with spaces to 8 bytes, little-endian data."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        data = _raw_bytes(t)
        header[name] = {"dtype": _dtype_name(t), "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# --------------------------------------------------------------------------- building blocks


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as torch.nn.LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def attention_bias(T, mask):
    """0 where query i may see key j (j <= i, key not padding), -1e9 elsewhere: [B|1,1,T,T]."""
    allowed = torch.tril(torch.ones(T, T))[None, None]
    if mask is not None:
        allowed = allowed * mask[:, None, None, :].to(torch.float64)
    return (1.0 - allowed) * -1e9


class Lora:
    """PEFT LoRA layer maths: base(x) + scaling * lora_B(lora_A(x)); A [r, in], B [out, r]."""

    def __init__(self, adapters, scaling):
        self.adapters = adapters  # module path -> (A, B) as float64 leaf tensors
        self.scaling = scaling

    def linear(self, path, x, w, b, conv1d):
        y = x @ w if conv1d else x @ w.T  # Conv1D stores [in, out]; nn.Linear [out, in]
        if b is not None:
            y = y + b
        if self.adapters is not None and path in self.adapters:
            a, bb = self.adapters[path]
            y = y + (x @ a.T) @ bb.T * self.scaling
        return y


# --------------------------------------------------------------------------- GPT-2


def gpt2_forward(cfg, sd, ids, mask, lora):
    """GPT2LMHeadModel forward. `sd` uses canonical transformer.* keys."""
    C, H = cfg["n_embd"], cfg["n_head"]
    D = C // H
    B, T = ids.shape
    p = "transformer."
    x = sd[p + "wte.weight"][ids] + sd[p + "wpe.weight"][torch.arange(T)]
    bias = attention_bias(T, mask)
    for i in range(cfg["n_layer"]):
        h = f"{p}h.{i}."
        a = layer_norm(x, sd[h + "ln_1.weight"], sd[h + "ln_1.bias"], cfg["layer_norm_epsilon"])
        qkv = lora.linear(h + "attn.c_attn", a, sd[h + "attn.c_attn.weight"], sd[h + "attn.c_attn.bias"], True)
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D) + bias
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + lora.linear(h + "attn.c_proj", y, sd[h + "attn.c_proj.weight"], sd[h + "attn.c_proj.bias"], True)
        m = layer_norm(x, sd[h + "ln_2.weight"], sd[h + "ln_2.bias"], cfg["layer_norm_epsilon"])
        m = gelu_new(lora.linear(h + "mlp.c_fc", m, sd[h + "mlp.c_fc.weight"], sd[h + "mlp.c_fc.bias"], True))
        x = x + lora.linear(h + "mlp.c_proj", m, sd[h + "mlp.c_proj.weight"], sd[h + "mlp.c_proj.bias"], True)
    x = layer_norm(x, sd[p + "ln_f.weight"], sd[p + "ln_f.bias"], cfg["layer_norm_epsilon"])
    return x @ sd[p + "wte.weight"].T  # tied lm_head


def gpt2_random(cfg, g):
    C, V, P, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]
    I = 4 * C
    n = lambda *s, std=0.15: torch.randn(*s, generator=g) * std
    sd = {"transformer.wte.weight": n(V, C, std=0.3), "transformer.wpe.weight": n(P, C, std=0.1)}
    for i in range(L):
        h = f"transformer.h.{i}."
        sd[h + "ln_1.weight"] = 1 + n(C, std=0.1)
        sd[h + "ln_1.bias"] = n(C, std=0.05)
        sd[h + "attn.c_attn.weight"] = n(C, 3 * C, std=0.25)
        sd[h + "attn.c_attn.bias"] = n(3 * C, std=0.05)
        sd[h + "attn.c_proj.weight"] = n(C, C)
        sd[h + "attn.c_proj.bias"] = n(C, std=0.05)
        sd[h + "ln_2.weight"] = 1 + n(C, std=0.1)
        sd[h + "ln_2.bias"] = n(C, std=0.05)
        sd[h + "mlp.c_fc.weight"] = n(C, I)
        sd[h + "mlp.c_fc.bias"] = n(I, std=0.05)
        sd[h + "mlp.c_proj.weight"] = n(I, C)
        sd[h + "mlp.c_proj.bias"] = n(C, std=0.05)
    sd["transformer.ln_f.weight"] = 1 + n(C, std=0.1)
    sd["transformer.ln_f.bias"] = n(C, std=0.05)
    return sd


def gpt2_linears(cfg):
    C = cfg["n_embd"]
    out = {}
    for i in range(cfg["n_layer"]):
        h = f"transformer.h.{i}."
        out[h + "attn.c_attn"] = (C, 3 * C)
        out[h + "attn.c_proj"] = (C, C)
        out[h + "mlp.c_fc"] = (C, 4 * C)
        out[h + "mlp.c_proj"] = (4 * C, C)
    return out


# --------------------------------------------------------------------------- Llama


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def llama_inv_freq(cfg):
    D = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type") == "llama3":
        factor, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        scaled = torch.where(wl > lo_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wl < hi_wl) & ~(wl > lo_wl)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def llama_forward(cfg, sd, ids, mask, lora):
    """LlamaForCausalLM forward with GQA via repeat_kv, as transformers does it."""
    C, H, KV, D = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    B, T = ids.shape
    eps = cfg["rms_norm_eps"]
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * llama_inv_freq(cfg)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    bias = attention_bias(T, mask)
    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        lin = lambda name, t: lora.linear(p + name, t, sd[p + name + ".weight"], None, False)
        q = lin("self_attn.q_proj", h).view(B, T, H, D).transpose(1, 2)
        k = lin("self_attn.k_proj", h).view(B, T, KV, D).transpose(1, 2)
        v = lin("self_attn.v_proj", h).view(B, T, KV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)  # repeat_kv
        v = v.repeat_interleave(H // KV, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D) + bias
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + lin("self_attn.o_proj", y)
        m = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate = lin("mlp.gate_proj", m)
        x = x + lin("mlp.down_proj", gate * torch.sigmoid(gate) * lin("mlp.up_proj", m))
    x = rms_norm(x, sd["model.norm.weight"], eps)
    return lora.linear("lm_head", x, sd["lm_head.weight"], None, False)


def llama_random(cfg, g):
    C, V, I = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    H, KV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    n = lambda *s, std=0.15: torch.randn(*s, generator=g) * std
    sd = {"model.embed_tokens.weight": n(V, C, std=0.5)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = 1 + n(C, std=0.1)
        sd[p + "self_attn.q_proj.weight"] = n(H * D, C, std=0.3)
        sd[p + "self_attn.k_proj.weight"] = n(KV * D, C, std=0.3)
        sd[p + "self_attn.v_proj.weight"] = n(KV * D, C)
        sd[p + "self_attn.o_proj.weight"] = n(C, H * D)
        sd[p + "post_attention_layernorm.weight"] = 1 + n(C, std=0.1)
        sd[p + "mlp.gate_proj.weight"] = n(I, C, std=0.2)
        sd[p + "mlp.up_proj.weight"] = n(I, C, std=0.2)
        sd[p + "mlp.down_proj.weight"] = n(C, I)
    sd["model.norm.weight"] = 1 + n(C, std=0.1)
    sd["lm_head.weight"] = n(V, C, std=0.3)
    return sd


def llama_linears(cfg):
    C, I = cfg["hidden_size"], cfg["intermediate_size"]
    H, KV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    out = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj"] = (C, H * D)
        out[p + "self_attn.k_proj"] = (C, KV * D)
        out[p + "self_attn.v_proj"] = (C, KV * D)
        out[p + "self_attn.o_proj"] = (H * D, C)
        out[p + "mlp.gate_proj"] = (C, I)
        out[p + "mlp.up_proj"] = (C, I)
        out[p + "mlp.down_proj"] = (I, C)
    out["lm_head"] = (C, cfg["vocab_size"])
    return out


# --------------------------------------------------------------------------- fixtures


def causal_lm_loss(logits, ids, loss_mask):
    """Mean next-token NLL over target positions with loss_mask = 1 (mask indexed by target)."""
    logp = logits[:, :-1].log_softmax(-1)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
    w = loss_mask[:, 1:].to(torch.float64)
    return -(picked * w).sum() / w.sum()


def matches(path, targets):
    return any(path == t or path.endswith("." + t) for t in targets)


def make_fixture(out_dir, name, cfg, stored_cfg, forward, random_sd, linears, lora_cfg, key_rename, seed):
    g = torch.Generator().manual_seed(seed)
    sd64 = random_sd(cfg, g)
    # The model file holds float32; the reference computes in float64 from exactly those values.
    sd32 = {k: v.to(torch.float32) for k, v in sd64.items()}
    sd = {k: v.to(torch.float64) for k, v in sd32.items()}

    model_dir = os.path.join(out_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(stored_cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(model_dir, "model.safetensors"), {key_rename(k): v for k, v in sd32.items()}, {"format": "pt"})

    V = cfg["vocab_size"]
    B, T = 2, 8
    ids = torch.randint(0, V, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    attention_mask[1, 5:] = 0  # right padding on the second row (training layout)
    # Left padding: real queries must ignore padded keys (positions stay 0..T-1, as in
    # transformers when position_ids are not given).
    left_mask = torch.ones(B, T, dtype=torch.int64)
    left_mask[0, :3] = 0
    loss_mask = torch.ones(B, T, dtype=torch.int64)
    loss_mask[0, :4] = 0  # a 4-token prompt excluded from the loss
    loss_mask[1, 5:] = 0  # padding excluded

    # PEFT adapter with non-zero B so that both A and B receive gradients.
    r, alpha = lora_cfg["r"], lora_cfg["lora_alpha"]
    scaling = alpha / math.sqrt(r) if lora_cfg["use_rslora"] else alpha / r
    adapters = {}
    tensors = {}
    for path, (fan_in, fan_out) in linears(cfg).items():
        if not matches(path, lora_cfg["target_modules"]):
            continue
        bound = 1 / math.sqrt(fan_in)
        a32 = ((torch.rand(r, fan_in, generator=g) * 2 - 1) * bound).to(torch.float32)
        b32 = (torch.randn(fan_out, r, generator=g) * 0.2).to(torch.float32)
        tensors[f"base_model.model.{path}.lora_A.weight"] = a32
        tensors[f"base_model.model.{path}.lora_B.weight"] = b32
        adapters[path] = (a32.to(torch.float64).requires_grad_(), b32.to(torch.float64).requires_grad_())
    adapter_dir = os.path.join(out_dir, name + "-adapter")
    os.makedirs(adapter_dir, exist_ok=True)
    with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
        json.dump(lora_cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"), tensors, {"format": "pt"})

    with torch.no_grad():
        logits_base = forward(cfg, sd, ids, None, Lora(None, 0))
        logits_masked = forward(cfg, sd, ids, left_mask, Lora(None, 0))
    logits_lora = forward(cfg, sd, ids, attention_mask, Lora(adapters, scaling))
    loss = causal_lm_loss(logits_lora, ids, loss_mask)
    loss.backward()

    expected = {
        "logits_base": logits_base.to(torch.float32),
        "logits_masked": logits_masked.to(torch.float32),
        "logits_lora": logits_lora.detach().to(torch.float32),
        "loss_lora": loss.detach().reshape(1).to(torch.float32),
    }
    for path, (a, b) in adapters.items():
        expected[f"grad.base_model.model.{path}.lora_A.weight"] = a.grad.to(torch.float32)
        expected[f"grad.base_model.model.{path}.lora_B.weight"] = b.grad.to(torch.float32)
    write_safetensors(os.path.join(out_dir, name + "-expected.safetensors"), expected)
    with open(os.path.join(out_dir, name + "-inputs.json"), "w") as f:
        json.dump({"input_ids": ids.tolist(), "attention_mask": attention_mask.tolist(),
                   "left_padded_attention_mask": left_mask.tolist(), "loss_mask": loss_mask.tolist()}, f)
        f.write("\n")


def make_dtype_fixture(out_dir, seed):
    """F16/BF16 tensors plus their exact F32 values, including specials and subnormals."""
    g = torch.Generator().manual_seed(seed)
    base = torch.cat([
        torch.randn(40, generator=g) * 3,
        torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6.0e-8, -3.0e-6, 1e-3, 1e30, -1e30, float("inf"), float("-inf")]),
    ]).to(torch.float32)
    f16 = base.to(torch.float16)
    bf16 = base.to(torch.bfloat16)
    write_safetensors(os.path.join(out_dir, "dtypes.safetensors"), {
        "f16": f16.reshape(4, 13),
        "f16_as_f32": f16.to(torch.float32).reshape(4, 13),
        "bf16": bf16.reshape(4, 13),
        "bf16_as_f32": bf16.to(torch.float32).reshape(4, 13),
        "f64": base.to(torch.float64).reshape(52),
        "f64_as_f32": base.reshape(52),
    }, {"purpose": "dtype conversion"})


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "libs/lora-core/test/fixtures"
    os.makedirs(out_dir, exist_ok=True)

    gpt2_cfg = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 64, "n_embd": 32,
        "n_head": 4, "n_layer": 2, "n_positions": 32, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
    }
    # Keys stored without the "transformer." prefix, like openai-community/gpt2 on the Hub.
    make_fixture(out_dir, "gpt2-tiny", gpt2_cfg, gpt2_cfg, gpt2_forward, gpt2_random, gpt2_linears,
                 {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                  "target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": True, "bias": "none",
                  "use_rslora": False, "use_dora": False, "base_model_name_or_path": "gpt2-tiny",
                  "some_future_peft_key": {"ignored": True}},
                 lambda k: k[len("transformer."):], seed=1234)

    llama_cfg = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32,
        "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
        "head_dim": 8, "rms_norm_eps": 1e-6, "rope_theta": 500.0, "max_position_embeddings": 64,
        "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16},
    }
    make_fixture(out_dir, "llama-tiny", llama_cfg, llama_cfg, llama_forward, llama_random, llama_linears,
                 {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 16, "lora_dropout": 0.0,
                  "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
                  "fan_in_fan_out": False, "bias": "none", "use_rslora": True, "use_dora": False,
                  "rank_pattern": {}, "alpha_pattern": {}, "base_model_name_or_path": "llama-tiny"},
                 lambda k: k, seed=4321)

    make_dtype_fixture(out_dir, seed=99)


if __name__ == "__main__":
    main()
