#!/usr/bin/env python3
"""PyTorch reference for lora-core's optimizer: torch.optim.AdamW plus
torch.nn.utils.clip_grad_norm_, in float32 as real training runs them.

Writes libs/lora-core/test/fixtures/adamw-reference.json with two cases:

1. "synthetic": two parameters, five steps with varying learning rates (one of them 0),
   weight decay 0.1, betas (0.9, 0.999), eps 1e-8, gradients clipped to a global norm of
   1.0 before each step. Records the total norm and both parameters after every step, so
   the bias corrections and the moments over several steps are checked, not just step 1.
2. "gpt2_tiny": one clipped AdamW step on the gpt2-tiny LoRA adapter from part 1
   (tools/reference/generate_fixtures.py), using the LoRA gradients stored there. The tfjs
   test recomputes the gradient itself through the trainer, so this checks the trainer's
   loss, gradient, clipping and update end to end.

Values are written with repr(float(x)) of float32 numbers, which round-trips exactly.

Run (Debian: apt-get install python3-torch):
    /usr/bin/python3 tools/reference/adamw_step.py libs/lora-core/test/fixtures
"""
import json
import os
import struct
import sys

import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        begin, end = info["data_offsets"]
        data = raw[8 + n + begin : 8 + n + end]
        t = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(info["shape"])
        out[name] = t.clone()
    return out


def dump(t):
    t = t.detach().to(torch.float32).contiguous()
    return {"shape": list(t.shape), "data": [float(x) for x in t.reshape(-1).tolist()]}


def synthetic():
    g = torch.Generator().manual_seed(2024)
    p = {
        "w1": torch.randn(5, 3, generator=g, dtype=torch.float32) * 0.5,
        "w2": torch.randn(3, 4, generator=g, dtype=torch.float32) * 0.5,
    }
    config = {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1, "max_grad_norm": 1.0}
    lrs = [1e-2, 5e-3, 2e-2, 0.0, 1e-3]
    params = {k: torch.nn.Parameter(v.clone()) for k, v in p.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=lrs[0], betas=tuple(config["betas"]),
                            eps=config["eps"], weight_decay=config["weight_decay"])
    steps = []
    for i, lr in enumerate(lrs):
        # Mixed scales: steps 1 and 4 stay under the clipping norm, step 2 is clipped hard.
        scale = [0.15, 10.0, 0.3, 0.15, 0.3][i]
        grads = {k: torch.randn(v.shape, generator=g, dtype=torch.float32) * scale for k, v in params.items()}
        for k, v in params.items():
            v.grad = grads[k].clone()
        total_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), config["max_grad_norm"])
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        steps.append({
            "lr": lr,
            "grads": {k: dump(v) for k, v in grads.items()},
            "total_norm": float(total_norm),
            "params_after": {k: dump(v) for k, v in params.items()},
        })
    return {"config": config, "params": {k: dump(v) for k, v in p.items()}, "steps": steps}


def gpt2_tiny(fixtures):
    adapter = read_safetensors(os.path.join(fixtures, "gpt2-tiny-adapter", "adapter_model.safetensors"))
    expected = read_safetensors(os.path.join(fixtures, "gpt2-tiny-expected.safetensors"))
    names = sorted(adapter)
    params = [torch.nn.Parameter(adapter[k].clone()) for k in names]
    for name, param in zip(names, params):
        param.grad = expected["grad." + name].clone()
    config = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "max_grad_norm": 0.5}
    total_norm = torch.nn.utils.clip_grad_norm_(params, config["max_grad_norm"])
    opt = torch.optim.AdamW(params, lr=config["lr"], betas=tuple(config["betas"]), eps=config["eps"],
                            weight_decay=config["weight_decay"])
    opt.step()
    return {
        "config": config,
        "total_norm": float(total_norm),
        # PEFT layout: lora_A.weight [r, in], lora_B.weight [out, r].
        "params_after": {k: dump(p) for k, p in zip(names, params)},
    }


def main():
    fixtures = sys.argv[1] if len(sys.argv) > 1 else "libs/lora-core/test/fixtures"
    out = {"torch_version": torch.__version__, "synthetic": synthetic(), "gpt2_tiny": gpt2_tiny(fixtures)}
    with open(os.path.join(fixtures, "adamw-reference.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
