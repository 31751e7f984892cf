#!/usr/bin/env python3
"""Reference outputs for prune/ tests (CI never runs this; outputs are committed).

sparsegpt.safetensors -- SparseGPT (Frantar & Alistarh 2023) written out in
  PyTorch f64 from the paper's algorithm: H = 2/n X^T X, dead inputs get a unit
  diagonal and a zeroed column, dampening lambda * mean(diag H), U = upper
  Cholesky factor of H^-1; per block of columns the mask is picked from
  w^2 / U_jj^2 of the current weights (unstructured: the block's k smallest,
  k = floor(sparsity * rows * block); N:M: the M-N smallest of each group of M,
  chosen when the solver reaches the group), each column's error is spread over
  the rest of the block, then the later columns get one lazy update.
  Tensors: W F32 [16, 32], X F32 [256, 32] (correlated, column 5 all zero),
  H F64 [32, 32], and out_<case> F32 for each case of CASES.

structured_<name>/ -- a tiny model of tests/reference/models/ pruned by
  slicing its state dict in transformers (heads, kv groups, MLP channels,
  hidden channels, layers) and the pruned model's logits:
  expected.safetensors with tokens I32 [T], logits F32 [T, vocab], and the
  plan: layers I64, heads_<i>, kv_heads_<i>, mlp_<i> I64 (per kept layer i),
  hidden I64.

Run: python3 tests/reference/prune/make_fixtures.py (needs torch, transformers).
"""
import math
import os

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")
TOKENS = [1, 17, 250, 3, 99, 318, 42, 42, 7, 128, 200, 5]

# name: (sparsity, n, m, block, dampening)
CASES = {
    "u50_b8": (0.5, 0, 0, 8, 0.01),
    "u30_b12": (0.3, 0, 0, 12, 0.01),
    "u60_b128": (0.6, 0, 0, 128, 0.05),
    "nm24_b8": (0.5, 2, 4, 8, 0.01),
    "nm48_b128": (0.5, 4, 8, 128, 0.01),
    "nm24_b6": (0.5, 2, 4, 6, 0.01),  # block rounds down to 4
}


def sparsegpt(W, H, sparsity, n, m, block, damp):
    W = W.clone().double()
    H = H.clone().double()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    if m:
        block = max(m, block // m * m)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        mask = torch.zeros_like(W1, dtype=torch.bool)
        if not m:
            score = (W1 ** 2 / d ** 2).flatten()
            k = math.floor(sparsity * score.numel() + 1e-9)
            mask.view(-1)[torch.argsort(score, stable=True)[:k]] = True
        Err1 = torch.zeros_like(W1)
        for i in range(count):
            if m and i % m == 0:
                score = W1[:, i:i + m] ** 2 / d[i:i + m] ** 2
                drop = torch.argsort(score, dim=1, stable=True)[:, :m - n]
                mask[:, i:i + m].scatter_(1, drop, True)
            w = W1[:, i]
            q = torch.where(mask[:, i], torch.zeros_like(w), w)
            err = (w - q) / d[i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W


def make_sparsegpt():
    g = torch.Generator().manual_seed(11)
    rows, cols, n = 16, 32, 256
    W = torch.randn(rows, cols, generator=g)
    # Correlated inputs with uneven scales (as LLM activations): X = Z A D.
    Z = torch.randn(n, 8, generator=g)
    A = torch.randn(8, cols, generator=g)
    X = Z @ A + 0.3 * torch.randn(n, cols, generator=g)
    X = X * torch.exp(torch.randn(cols, generator=g))
    X[:, 5] = 0
    Xd = X.double()
    H = 2.0 / n * Xd.T @ Xd
    out = {"W": W.contiguous(), "X": X.contiguous(), "H": H.contiguous()}
    for name, (sp, nn_, m, block, damp) in CASES.items():
        out["out_" + name] = sparsegpt(W, H, sp, nn_, m, block, damp).float().contiguous()
    save_file(out, os.path.join(HERE, "sparsegpt.safetensors"), metadata={"format": "pt"})
    print("sparsegpt", list(out))


def head_rows(heads, hd):
    return torch.tensor([h * hd + d for h in heads for d in range(hd)], dtype=torch.long)


def prune_state(sd, cfg, plan):
    """Slices the HF state dict by the plan (kept indices of the original)."""
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    hid = torch.tensor(plan["hidden"])
    out = {}
    for name, t in sd.items():
        if name.startswith("model.layers."):
            parts = name.split(".")
            layer = int(parts[2])
            if layer not in plan["layers"]:
                continue
            i = plan["layers"].index(layer)
            rest = ".".join(parts[3:])
            new = f"model.layers.{i}.{rest}"
            q = head_rows(plan["heads"][i], hd)
            kv = head_rows(plan["kv_heads"][i], hd)
            mlp = torch.tensor(plan["mlp"][i])
            if rest in ("input_layernorm.weight", "post_attention_layernorm.weight",
                        "self_attn.o_proj.bias", "mlp.down_proj.bias"):
                t = t[hid]
            elif rest == "self_attn.q_proj.weight":
                t = t[q][:, hid]
            elif rest in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
                t = t[kv][:, hid]
            elif rest == "self_attn.q_proj.bias":
                t = t[q]
            elif rest in ("self_attn.k_proj.bias", "self_attn.v_proj.bias"):
                t = t[kv]
            elif rest == "self_attn.o_proj.weight":
                t = t[hid][:, q]
            elif rest in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
                t = t[mlp][:, hid]
            elif rest in ("mlp.gate_proj.bias", "mlp.up_proj.bias"):
                t = t[mlp]
            elif rest == "mlp.down_proj.weight":
                t = t[hid][:, mlp]
            elif rest in ("self_attn.q_norm.weight", "self_attn.k_norm.weight"):
                pass
            else:
                raise ValueError(name)
            out[new] = t.clone()
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            out[name] = t[:, hid].clone()
        elif name == "model.norm.weight":
            out[name] = t[hid].clone()
        else:
            raise ValueError(name)
    return out


def make_structured(name, source, plan):
    src_dir = os.path.join(MODELS, source)
    model = AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    new_cfg = AutoConfig.from_pretrained(src_dir)
    new_cfg.num_hidden_layers = len(plan["layers"])
    new_cfg.num_attention_heads = len(plan["heads"][0])
    new_cfg.num_key_value_heads = len(plan["kv_heads"][0])
    new_cfg.intermediate_size = len(plan["mlp"][0])
    new_cfg.hidden_size = len(plan["hidden"])
    new_cfg.head_dim = hd
    if getattr(new_cfg, "layer_types", None) is not None:
        new_cfg.layer_types = [cfg.layer_types[l] for l in plan["layers"]]
    sd = prune_state(model.state_dict(), cfg, plan)
    pruned = AutoModelForCausalLM.from_config(new_cfg, attn_implementation="eager").eval()
    missing, unexpected = pruned.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    assert not missing and not unexpected, (missing, unexpected)
    assert pruned.model.layers[0].self_attn.q_proj.weight.shape == (len(plan["heads"][0]) * hd,
                                                                    len(plan["hidden"]))
    if cfg.tie_word_embeddings:
        assert pruned.lm_head.weight.data_ptr() == pruned.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        logits = pruned(torch.tensor([TOKENS]), use_cache=False).logits[0].float().contiguous()
    out = {"tokens": torch.tensor(TOKENS, dtype=torch.int32), "logits": logits,
           "layers": torch.tensor(plan["layers"], dtype=torch.int64),
           "hidden": torch.tensor(plan["hidden"], dtype=torch.int64)}
    for i in range(len(plan["layers"])):
        for key in ("heads", "kv_heads", "mlp"):
            out[f"{key}_{i}"] = torch.tensor(plan[key][i], dtype=torch.int64)
    out_dir = os.path.join(HERE, "structured_" + name)
    os.makedirs(out_dir, exist_ok=True)
    save_file(out, os.path.join(out_dir, "expected.safetensors"), metadata={"format": "pt"})
    print(name, {k: tuple(v.shape) for k, v in out.items()})


def sorted_sample(g, n, k):
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def main():
    make_sparsegpt()
    g = torch.Generator().manual_seed(5)
    # Qwen2 (tied embeddings, q/k/v biases): query heads pruned per group
    # (different per layer), MLP and hidden channels.
    make_structured("qwen2", "qwen2", {
        "layers": [0, 1], "heads": [[0, 3], [1, 2]], "kv_heads": [[0, 1], [0, 1]],
        "mlp": [sorted_sample(g, 128, 96), sorted_sample(g, 128, 96)],
        "hidden": sorted_sample(g, 64, 48)})
    # Qwen3 (q/k norm, head_dim 24 != hidden/heads, untied): a whole kv group
    # and layer 0 removed, MLP and hidden channels.
    make_structured("qwen3", "qwen3", {
        "layers": [1], "heads": [[2, 3]], "kv_heads": [[1]],
        "mlp": [sorted_sample(g, 128, 80)], "hidden": sorted_sample(g, 64, 40)})
    # Llama (llama3 RoPE scaling, untied): depth and one head of one group only.
    make_structured("llama", "llama", {
        "layers": [1], "heads": [[0]], "kv_heads": [[0]], "mlp": [list(range(128))],
        "hidden": list(range(64))})


if __name__ == "__main__":
    main()
