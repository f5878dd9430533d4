#!/usr/bin/env python3
"""Independent PyTorch reference for the rotary decoder families (issue 16): Qwen2, Qwen3,
Mistral, Phi-3 and Gemma 2.

Each family's forward is written here from its transformers modeling file (v4.46+:
modeling_qwen2.py, modeling_qwen3.py, modeling_mistral.py, modeling_phi3.py,
modeling_gemma2.py), separately
from lora-core's one configurable decoder, so the TypeScript options are checked against
the families as transformers writes them. Nothing imports transformers or peft.

Per family: a tiny random model (config.json + model.safetensors, F32 or BF16), a PEFT
adapter with non-zero B, and expected logits, loss and LoRA gradients in float64 from the
stored weights. Same file layout as generate_fixtures.py (parity.spec.ts reads both).

Run (Debian: apt-get install python3-torch):
    /usr/bin/python3 tools/reference/generate_family_fixtures.py libs/lora-core/test/fixtures
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate_fixtures import (  # noqa: E402  (shared file-format and loss helpers)
    Lora,
    attention_bias,
    causal_lm_loss,
    matches,
    rms_norm,
    rotate_half,
    write_safetensors,
)

torch.set_default_dtype(torch.float64)


# --------------------------------------------------------------------------- shared maths


def rope(cfg, T):
    """Default RoPE tables (no scaling): cos, sin [T, D], the D/2 frequencies repeated twice."""
    D = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def sdpa(q, k, v, bias, H, KV):
    """eager_attention_forward: repeat_kv, q·kᵀ/√D + mask, softmax, ·v → [B, T, H·D]."""
    B, _, T, D = q.shape
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    att = (q @ k.transpose(-1, -2)) / math.sqrt(D) + bias
    return (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)


def head(cfg, sd, x, lora):
    x = rms_norm(x, sd["model.norm.weight"], cfg["rms_norm_eps"])
    if cfg["tie_word_embeddings"]:
        return x @ sd["model.embed_tokens.weight"].T
    return lora.linear("lm_head", x, sd["lm_head.weight"], None, False)


# --------------------------------------------------------------------------- families


def qwen2_forward(cfg, sd, ids, mask, lora):
    """Qwen2ForCausalLM: Llama with biases on q/k/v (none on o_proj)."""
    H, KV, D, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    B, T = ids.shape
    cos, sin = rope(cfg, T)
    bias = attention_bias(T, mask)
    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        lin = lambda name, t, b=False: lora.linear(p + name, t, sd[p + name + ".weight"], sd[p + name + ".bias"] if b else None, False)
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        q = lin("self_attn.q_proj", h, True).view(B, T, H, D).transpose(1, 2)
        k = lin("self_attn.k_proj", h, True).view(B, T, KV, D).transpose(1, 2)
        v = lin("self_attn.v_proj", h, True).view(B, T, KV, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        x = x + lin("self_attn.o_proj", sdpa(q, k, v, bias, H, KV))
        m = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate = lin("mlp.gate_proj", m)
        x = x + lin("mlp.down_proj", torch.nn.functional.silu(gate) * lin("mlp.up_proj", m))
    return head(cfg, sd, x, lora)


def qwen3_forward(cfg, sd, ids, mask, lora):
    """Qwen3ForCausalLM: explicit head_dim, per-head RMSNorm of q and k before RoPE."""
    H, KV, D, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    B, T = ids.shape
    cos, sin = rope(cfg, T)
    bias = attention_bias(T, mask)
    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        lin = lambda name, t: lora.linear(p + name, t, sd[p + name + ".weight"], None, False)
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        # q_norm(q_proj(h).view(B, T, H, D)).transpose(1, 2)
        q = rms_norm(lin("self_attn.q_proj", h).view(B, T, H, D), sd[p + "self_attn.q_norm.weight"], eps).transpose(1, 2)
        k = rms_norm(lin("self_attn.k_proj", h).view(B, T, KV, D), sd[p + "self_attn.k_norm.weight"], eps).transpose(1, 2)
        v = lin("self_attn.v_proj", h).view(B, T, KV, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        x = x + lin("self_attn.o_proj", sdpa(q, k, v, bias, H, KV))
        m = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate = lin("mlp.gate_proj", m)
        x = x + lin("mlp.down_proj", torch.nn.functional.silu(gate) * lin("mlp.up_proj", m))
    return head(cfg, sd, x, lora)


def mistral_forward(cfg, sd, ids, mask, lora):
    """MistralForCausalLM with transformers' sliding-window mask (key j visible from query i
    when i − j < sliding_window), so a fixture with T ≤ window checks the window is a no-op."""
    H, KV, D, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    B, T = ids.shape
    cos, sin = rope(cfg, T)
    bias = attention_bias(T, mask)
    W = cfg.get("sliding_window")
    if W is not None:
        i_idx = torch.arange(T)[:, None]
        j_idx = torch.arange(T)[None, :]
        bias = bias + torch.where(i_idx - j_idx < W, 0.0, -1e9)[None, None]
    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        lin = lambda name, t: lora.linear(p + name, t, sd[p + name + ".weight"], None, False)
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        q = lin("self_attn.q_proj", h).view(B, T, H, D).transpose(1, 2)
        k = lin("self_attn.k_proj", h).view(B, T, KV, D).transpose(1, 2)
        v = lin("self_attn.v_proj", h).view(B, T, KV, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        x = x + lin("self_attn.o_proj", sdpa(q, k, v, bias, H, KV))
        m = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate = lin("mlp.gate_proj", m)
        x = x + lin("mlp.down_proj", torch.nn.functional.silu(gate) * lin("mlp.up_proj", m))
    return head(cfg, sd, x, lora)


def phi3_forward(cfg, sd, ids, mask, lora):
    """Phi3ForCausalLM: fused qkv_proj (q, k, v rows) and gate_up_proj (gate, up rows)."""
    H, KV, D, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    B, T = ids.shape
    cos, sin = rope(cfg, T)
    bias = attention_bias(T, mask)
    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        lin = lambda name, t: lora.linear(p + name, t, sd[p + name + ".weight"], None, False)
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        qkv = lin("self_attn.qkv_proj", h)
        qp = H * D
        q = qkv[..., :qp].view(B, T, H, D).transpose(1, 2)
        k = qkv[..., qp : qp + KV * D].view(B, T, KV, D).transpose(1, 2)
        v = qkv[..., qp + KV * D :].view(B, T, KV, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        x = x + lin("self_attn.o_proj", sdpa(q, k, v, bias, H, KV))
        m = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate, up = lin("mlp.gate_up_proj", m).chunk(2, dim=-1)
        x = x + lin("mlp.down_proj", up * torch.nn.functional.silu(gate))
    return head(cfg, sd, x, lora)


def gemma_norm(x, w, eps):
    """Gemma2RMSNorm: x·rsqrt(mean(x²) + eps)·(1 + w)."""
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * (1.0 + w)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gemma2_forward(cfg, sd, ids, mask, lora):
    """Gemma2ForCausalLM: embeddings × √C (float32, as `normalizer`), (1 + w) norms, sandwich
    norms, scores × query_pre_attn_scalar^−½ soft-capped before the mask, sliding window on
    even layers, GeGLU with tanh-GELU, tied head, soft-capped final logits."""
    H, KV, D, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    B, T = ids.shape
    cos, sin = rope(cfg, T)
    causal = attention_bias(T, mask)
    W = cfg["sliding_window"]
    i_idx, j_idx = torch.arange(T)[:, None], torch.arange(T)[None, :]
    sliding = causal + torch.where(i_idx - j_idx < W, 0.0, -1e9)[None, None]
    scaling = cfg["query_pre_attn_scalar"] ** -0.5
    attn_cap, final_cap = cfg["attn_logit_softcapping"], cfg["final_logit_softcapping"]
    normalizer = torch.tensor(cfg["hidden_size"] ** 0.5, dtype=torch.float32).to(torch.float64)
    x = sd["model.embed_tokens.weight"][ids] * normalizer
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        lin = lambda name, t: lora.linear(p + name, t, sd[p + name + ".weight"], None, False)
        h = gemma_norm(x, sd[p + "input_layernorm.weight"], eps)
        q = lin("self_attn.q_proj", h).view(B, T, H, D).transpose(1, 2)
        k = lin("self_attn.k_proj", h).view(B, T, KV, D).transpose(1, 2)
        v = lin("self_attn.v_proj", h).view(B, T, KV, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = (q @ k.transpose(-1, -2)) * scaling
        att = torch.tanh(att / attn_cap) * attn_cap
        att = att + (sliding if i % 2 == 0 else causal)
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + gemma_norm(lin("self_attn.o_proj", y), sd[p + "post_attention_layernorm.weight"], eps)
        m = gemma_norm(x, sd[p + "pre_feedforward_layernorm.weight"], eps)
        m = lin("mlp.down_proj", gelu_tanh(lin("mlp.gate_proj", m)) * lin("mlp.up_proj", m))
        x = x + gemma_norm(m, sd[p + "post_feedforward_layernorm.weight"], eps)
    x = gemma_norm(x, sd["model.norm.weight"], eps)
    logits = x @ sd["model.embed_tokens.weight"].T
    return torch.tanh(logits / final_cap) * final_cap


# --------------------------------------------------------------------------- random weights


def linears(cfg):
    """Module path → (in, out) for every nn.Linear, as the family names them."""
    C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    fused = cfg["model_type"] == "phi3"
    out = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if fused:
            out[p + "self_attn.qkv_proj"] = (C, (H + 2 * KV) * D)
        else:
            out[p + "self_attn.q_proj"] = (C, H * D)
            out[p + "self_attn.k_proj"] = (C, KV * D)
            out[p + "self_attn.v_proj"] = (C, KV * D)
        out[p + "self_attn.o_proj"] = (H * D, C)
        if fused:
            out[p + "mlp.gate_up_proj"] = (C, 2 * I)
        else:
            out[p + "mlp.gate_proj"] = (C, I)
            out[p + "mlp.up_proj"] = (C, I)
        out[p + "mlp.down_proj"] = (I, C)
    if not cfg["tie_word_embeddings"]:
        out["lm_head"] = (C, V)
    return out


def random_sd(cfg, g):
    C, V, D = cfg["hidden_size"], cfg["vocab_size"], cfg["head_dim"]
    n = lambda *s, std=0.15: torch.randn(*s, generator=g) * std
    sd = {"model.embed_tokens.weight": n(V, C, std=0.5)}
    for path, (fan_in, fan_out) in linears(cfg).items():
        sd[path + ".weight"] = n(fan_out, fan_in, std=0.3 if "q" in path.split(".")[-1] or "k_proj" in path else 0.15)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = 1 + n(C, std=0.1)
        sd[p + "post_attention_layernorm.weight"] = 1 + n(C, std=0.1)
        if cfg["model_type"] == "gemma2":
            # (1 + w) norms: w near 0 is the neutral scale.
            for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                         "post_feedforward_layernorm"):
                sd[p + norm + ".weight"] = n(C, std=0.1)
        if cfg["model_type"] == "qwen2":
            for name, (_, fan_out) in linears(cfg).items():
                if name.startswith(p) and name.split(".")[-1] in ("q_proj", "k_proj", "v_proj"):
                    sd[name + ".bias"] = n(fan_out, std=0.2)
        if cfg["model_type"] == "qwen3":
            sd[p + "self_attn.q_norm.weight"] = 1 + n(D, std=0.2)
            sd[p + "self_attn.k_norm.weight"] = 1 + n(D, std=0.2)
    sd["model.norm.weight"] = n(C, std=0.1) + (0 if cfg["model_type"] == "gemma2" else 1)
    return sd


# --------------------------------------------------------------------------- fixtures


def make_family_fixture(out_dir, name, cfg, forward, dtype, lora_cfg, seed):
    g = torch.Generator().manual_seed(seed)
    sd64 = random_sd(cfg, g)
    # The model file holds `dtype`; the reference computes in float64 from exactly those values.
    stored = {k: v.to(dtype) for k, v in sd64.items()}
    sd = {k: v.to(torch.float64) for k, v in stored.items()}

    model_dir = os.path.join(out_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(model_dir, "model.safetensors"), stored, {"format": "pt"})

    V = cfg["vocab_size"]
    B, T = 2, 8
    ids = torch.randint(0, V, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    attention_mask[1, 5:] = 0
    left_mask = torch.ones(B, T, dtype=torch.int64)
    left_mask[0, :3] = 0
    loss_mask = torch.ones(B, T, dtype=torch.int64)
    loss_mask[0, :4] = 0
    loss_mask[1, 5:] = 0

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


def peft(targets, r=4, alpha=8, rslora=False, name=""):
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
            "target_modules": targets, "fan_in_fan_out": False, "bias": "none", "use_rslora": rslora,
            "use_dora": False, "base_model_name_or_path": name}


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "libs/lora-core/test/fixtures"
    os.makedirs(out_dir, exist_ok=True)
    small = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 64, "hidden_act": "silu"}

    # Qwen2.5-style: tied head, GQA 4:2, biases on q/k/v, rope_theta 1e6, window unused.
    qwen2 = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], **small, "num_key_value_heads": 2,
             "head_dim": 8, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
             "use_sliding_window": False, "sliding_window": 4, "max_window_layers": 2}
    # The foreign adapter of the issue: q_proj and v_proj (PEFT's default for qwen2).
    make_family_fixture(out_dir, "qwen2-tiny", qwen2, qwen2_forward, torch.float32,
                        peft(["q_proj", "v_proj"], name="qwen2-tiny"), seed=1601)

    # Qwen3: head_dim 12 ≠ hidden/heads 8, q/k norms, untied, BF16 weights.
    qwen3 = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], **small, "num_key_value_heads": 2,
             "head_dim": 12, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
             "attention_bias": False, "use_sliding_window": False, "sliding_window": None}
    make_family_fixture(out_dir, "qwen3-tiny", qwen3, qwen3_forward, torch.bfloat16,
                        peft(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                             r=4, alpha=16, name="qwen3-tiny"), seed=1602)

    # Mistral-Nemo-style: explicit head_dim 16 ≠ 8, GQA 4:1, sliding_window 8 = T (exact),
    # untied head with an adapter on it, rsLoRA, BF16 weights.
    mistral = {"model_type": "mistral", "architectures": ["MistralForCausalLM"], **small, "num_key_value_heads": 1,
               "head_dim": 16, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
               "sliding_window": 8}
    make_family_fixture(out_dir, "mistral-tiny", mistral, mistral_forward, torch.bfloat16,
                        peft(["q_proj", "v_proj", "down_proj", "lm_head"], r=4, alpha=8, rslora=True,
                             name="mistral-tiny"), seed=1603)

    # Phi-3: fused qkv_proj and gate_up_proj, GQA 4:2, untied. The foreign adapter of the
    # issue targets the fused layers (qkv_proj, gate_up_proj).
    phi3 = {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], **small, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "rope_scaling": None,
            "sliding_window": None, "original_max_position_embeddings": 64}
    phi3_ref = {**phi3, "head_dim": 8}  # Phi3Config has no head_dim key: hidden/heads
    make_family_fixture(out_dir, "phi3-tiny", phi3_ref, phi3_forward, torch.float32,
                        peft(["qkv_proj", "gate_up_proj"], name="phi3-tiny"), seed=1604)
    # Gemma 2: head_dim 16 ≠ 32/4, query_pre_attn_scalar 12 ≠ head_dim, caps small enough to
    # bend the scores and logits, sliding_window 8 = T on the even layers, tied head.
    gemma2 = {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], **small, "num_key_value_heads": 2,
              "head_dim": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
              "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 12,
              "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0, "sliding_window": 8,
              "attention_bias": False}
    del gemma2["hidden_act"]
    make_family_fixture(out_dir, "gemma2-tiny", gemma2, gemma2_forward, torch.float32,
                        peft(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                             r=4, alpha=8, name="gemma2-tiny"), seed=1605)

    # The stored config must not carry the reference-only head_dim.
    with open(os.path.join(out_dir, "phi3-tiny", "config.json"), "w") as f:
        json.dump(phi3, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
