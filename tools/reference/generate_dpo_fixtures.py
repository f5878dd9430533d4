#!/usr/bin/env python3
"""Independent PyTorch reference for lora-core's DPO loss (issue 20).

Reuses the committed tiny models and PEFT adapters of generate_fixtures.py (gpt2-tiny: tied
head; llama-tiny: an adapter on lm_head) and their forward passes, and adds a preference
batch: 2P rows, chosen completions in rows [0, P) and rejected ones in [P, 2P), each row a
prompt (not scored) plus a completion (scored), right-padded. Written from the paper
(Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) and TRL's sigmoid loss:

    logp(row) = sum over scored tokens t of log softmax(logits[t - 1])[ids[t]]
    z         = (logp_policy(chosen) - logp_policy(rejected)) - (logp_ref(chosen) - logp_ref(rejected))
    loss      = mean over pairs of -log sigmoid(beta * z)
    rewards   = beta * (logp_policy - logp_ref), per side

The policy is the base model plus the adapter; the reference is the base model alone. All
maths in float64 from the stored float32 weights; the LoRA A/B gradients come from autograd.

Run (Debian: apt-get install python3-torch):
    /usr/bin/python3 tools/reference/generate_dpo_fixtures.py libs/lora-core/test/fixtures

CI never runs this script; the tests only read the committed output.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adamw_step import read_safetensors  # noqa: E402  (F32 reader)
from generate_fixtures import Lora, gpt2_forward, llama_forward, write_safetensors  # noqa: E402

torch.set_default_dtype(torch.float64)

BETA = 0.1
# (prompt tokens, chosen tokens, rejected tokens) per pair: unequal lengths, so rows are
# padded differently and a completion may be longer or shorter than its rival.
PAIRS = [(3, 4, 5), (5, 2, 3), (2, 6, 1)]


def sequence_logps(logits, ids, loss_mask):
    """Per row: sum of log-probabilities of the scored tokens (loss_mask indexed by target)."""
    logp = logits[:, :-1].log_softmax(-1)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
    return (picked * loss_mask[:, 1:].to(torch.float64)).sum(-1)


def preference_batch(vocab, g):
    P = len(PAIRS)
    rows = []
    for prompt_len, chosen_len, rejected_len in PAIRS:
        prompt = torch.randint(0, vocab, (prompt_len,), generator=g).tolist()
        rows.append((prompt, torch.randint(0, vocab, (chosen_len,), generator=g).tolist()))
        rows.append((prompt, torch.randint(0, vocab, (rejected_len,), generator=g).tolist()))
    # Interleaved above (pair by pair); the batch layout is all chosen rows, then all rejected.
    ordered = rows[0::2] + rows[1::2]
    T = max(len(p) + len(c) for p, c in ordered)
    ids = torch.zeros(2 * P, T, dtype=torch.int64)
    attention = torch.zeros(2 * P, T, dtype=torch.int64)
    loss_mask = torch.zeros(2 * P, T, dtype=torch.int64)
    for b, (prompt, completion) in enumerate(ordered):
        n = len(prompt) + len(completion)
        ids[b, :n] = torch.tensor(prompt + completion)
        attention[b, :n] = 1
        loss_mask[b, len(prompt) : n] = 1
    return ids, attention, loss_mask


def make_dpo_fixture(fixtures, name, forward, prefix, seed):
    with open(os.path.join(fixtures, name, "config.json")) as f:
        cfg = json.load(f)
    stored = read_safetensors(os.path.join(fixtures, name, "model.safetensors"))
    sd = {(k if k.startswith(prefix) else prefix + k): v.to(torch.float64) for k, v in stored.items()}
    with open(os.path.join(fixtures, name + "-adapter", "adapter_config.json")) as f:
        lora_cfg = json.load(f)
    r, alpha = lora_cfg["r"], lora_cfg["lora_alpha"]
    scaling = alpha / math.sqrt(r) if lora_cfg["use_rslora"] else alpha / r
    adapter = read_safetensors(os.path.join(fixtures, name + "-adapter", "adapter_model.safetensors"))
    adapters = {}
    for key in adapter:
        if key.endswith(".lora_A.weight"):
            path = key[len("base_model.model.") : -len(".lora_A.weight")]
            b_key = key.replace(".lora_A.", ".lora_B.")
            adapters[path] = (
                adapter[key].to(torch.float64).requires_grad_(),
                adapter[b_key].to(torch.float64).requires_grad_(),
            )

    g = torch.Generator().manual_seed(seed)
    ids, attention, loss_mask = preference_batch(cfg["vocab_size"], g)
    P = len(PAIRS)

    with torch.no_grad():
        reference = sequence_logps(forward(cfg, sd, ids, attention, Lora(None, 0)), ids, loss_mask)
    policy = sequence_logps(forward(cfg, sd, ids, attention, Lora(adapters, scaling)), ids, loss_mask)
    z = (policy[:P] - policy[P:]) - (reference[:P] - reference[P:])
    losses = -torch.nn.functional.logsigmoid(BETA * z)
    loss = losses.mean()
    loss.backward()

    f32 = lambda t: t.detach().to(torch.float32)
    expected = {
        "loss": f32(loss).reshape(1),
        "losses": f32(losses),
        "rewards_chosen": f32(BETA * (policy[:P] - reference[:P])),
        "rewards_rejected": f32(BETA * (policy[P:] - reference[P:])),
        "policy_logps": f32(policy),
        "reference_logps": f32(reference),
    }
    for path, (a, b) in adapters.items():
        expected[f"grad.base_model.model.{path}.lora_A.weight"] = f32(a.grad)
        expected[f"grad.base_model.model.{path}.lora_B.weight"] = f32(b.grad)
    write_safetensors(os.path.join(fixtures, f"dpo-{name}-expected.safetensors"), expected)
    with open(os.path.join(fixtures, f"dpo-{name}-inputs.json"), "w") as f:
        json.dump({"beta": BETA, "pairs": P, "input_ids": ids.tolist(), "attention_mask": attention.tolist(),
                   "loss_mask": loss_mask.tolist()}, f)
        f.write("\n")
    print(f"{name}: loss {loss.item():.6f}, z {z.tolist()}")


def main():
    fixtures = sys.argv[1] if len(sys.argv) > 1 else "libs/lora-core/test/fixtures"
    make_dpo_fixture(fixtures, "gpt2-tiny", gpt2_forward, "transformer.", seed=2005)
    make_dpo_fixture(fixtures, "llama-tiny", llama_forward, "", seed=2018)


if __name__ == "__main__":
    main()
