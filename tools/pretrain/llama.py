"""Minimal, dependency-free re-implementation of Hugging Face `LlamaForCausalLM`.

Only PyTorch is needed. The forward pass follows transformers' modeling_llama.py
(default rope, no rope scaling, no biases, eager attention) so that weights saved
from here load into HF `LlamaForCausalLM` unchanged, and vice versa.

Also contains a tiny safetensors reader/writer (F32 only for writing).
"""
import json
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------- model
class LlamaConfig:
    def __init__(self, **kw):
        self.vocab_size = kw.get("vocab_size", 2048)
        self.hidden_size = kw.get("hidden_size", 256)
        self.intermediate_size = kw.get("intermediate_size", 688)
        self.num_hidden_layers = kw.get("num_hidden_layers", 4)
        self.num_attention_heads = kw.get("num_attention_heads", 4)
        self.num_key_value_heads = kw.get("num_key_value_heads", 2)
        self.head_dim = kw.get("head_dim", self.hidden_size // self.num_attention_heads)
        self.max_position_embeddings = kw.get("max_position_embeddings", 512)
        self.rms_norm_eps = kw.get("rms_norm_eps", 1e-5)
        self.rope_theta = kw.get("rope_theta", 10000.0)
        self.initializer_range = kw.get("initializer_range", 0.02)
        self.tie_word_embeddings = kw.get("tie_word_embeddings", True)
        self.bos_token_id = kw.get("bos_token_id")
        self.eos_token_id = kw.get("eos_token_id")
        self.pad_token_id = kw.get("pad_token_id")

    def to_hf_dict(self):
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "head_dim": self.head_dim,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": None,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            "transformers_version": "4.46.0",
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_hf_dict(cls, d):
        return cls(**d)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        var = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(head_dim, theta, positions, dtype=torch.float32):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]  # [T, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, d]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class LoRALinear(nn.Module):
    """nn.Linear (frozen) + PEFT-style LoRA: y = W x + (alpha/r) * B(A(dropout(x)))."""

    def __init__(self, base: nn.Linear, r=8, alpha=16, dropout=0.0):
        super().__init__()
        self.base = base
        self.r = r
        self.scaling = alpha / r
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # PEFT default
        nn.init.zeros_(self.lora_B.weight)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def weight(self):
        return self.base.weight

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(self.drop(x))) * self.scaling


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.nh, self.nkv, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, c.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, past=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            if past[0] is not None:
                k = torch.cat([past[0], k], dim=2)
                v = torch.cat([past[1], v], dim=2)
            past[0], past[1] = k, v
        rep = self.nh // self.nkv
        if rep > 1:  # HF repeat_kv: head h uses kv head h // rep
            k = k[:, :, None].expand(B, self.nkv, rep, k.shape[2], self.hd).reshape(B, self.nh, k.shape[2], self.hd)
            v = v[:, :, None].expand(B, self.nkv, rep, v.shape[2], self.hd).reshape(B, self.nh, v.shape[2], self.hd)
        att = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
        if mask is not None:
            att = att + mask
        att = F.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
        y = torch.matmul(att, v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask, past=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class LlamaModel(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.config = c
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.apply(self._init)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _init(self, m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=self.config.initializer_range)

    def forward(self, input_ids, attention_mask=None, past=None, start_pos=0):
        """input_ids [B,T] -> logits [B,T,V] (float32).

        attention_mask: optional [B,T] 1/0 (right padding only is needed here).
        past: optional list of [k,v] per layer for incremental decoding (B=1 typical).
        """
        B, T = input_ids.shape
        c = self.config
        x = self.model.embed_tokens(input_ids)
        pos = torch.arange(start_pos, start_pos + T)
        cos, sin = rope_cos_sin(c.head_dim, c.rope_theta, pos, x.dtype)
        S = start_pos + T
        mask = None
        if T > 1 or attention_mask is not None:
            mask = torch.full((T, S), float("-inf"))
            mask = torch.triu(mask, diagonal=start_pos + 1)[None, None]  # [1,1,T,S]
            if attention_mask is not None:
                pad = (1.0 - attention_mask[:, None, None, :S].float()) * torch.finfo(torch.float32).min
                mask = mask + pad
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, mask, None if past is None else past[i])
        x = self.model.norm(x)
        return self.lm_head(x)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # tied weights counted once


def hf_state_dict(model: LlamaForCausalLM):
    """State dict with HF key names (lm_head omitted when tied, as save_pretrained does)."""
    sd = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        sd[k] = v.detach().to(torch.float32).contiguous()
    return sd


# ---------------------------------------------------------------------- safetensors
_DT = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}


def save_safetensors(tensors: dict, path: str, metadata: dict = None):
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous().cpu()
        b = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path: str):
    import numpy as np

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    meta = header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        s, e = info["data_offsets"]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(data[s:e], dtype="<f4").copy()
            t = torch.from_numpy(arr)
        elif dt == "F16":
            t = torch.from_numpy(np.frombuffer(data[s:e], dtype="<f2").copy()).float()
        elif dt == "BF16":
            u = np.frombuffer(data[s:e], dtype="<u2").astype("<u4") << 16
            t = torch.from_numpy(u.view("<f4").copy())
        else:
            raise ValueError(f"unsupported dtype {dt} for {name}")
        out[name] = t.reshape(info["shape"])
    return out, meta


def load_model(model_dir: str) -> LlamaForCausalLM:
    import os

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = LlamaConfig.from_hf_dict(json.load(f))
    m = LlamaForCausalLM(cfg)
    sd, _ = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    if cfg.tie_word_embeddings:
        sd.setdefault("lm_head.weight", sd["model.embed_tokens.weight"])
    missing, unexpected = m.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"missing={missing} unexpected={unexpected}")
    if cfg.tie_word_embeddings:
        m.lm_head.weight = m.model.embed_tokens.weight
    m.eval()
    return m
