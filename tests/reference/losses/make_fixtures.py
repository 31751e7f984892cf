#!/usr/bin/env python3
"""Reference values for distill/loss.h (ComputeLoss) and distill/optimizer.h.

Losses: random student hidden states h, LM head W, next-token targets with
masked (-1) positions, an online teacher (hidden states th, head TW) and an
offline top-k teacher taken from the same teacher logits. Every loss is
computed with torch autograd in float64 from the float32-rounded inputs,
following the conventions in distill/loss.h (CE at T=1, KD at T scaled by
T^2, TRL's generalized JSD with beta=0/1 meaning forward/reverse KL, top-k
tail bucket or renormalised top-k, and on-policy distillation's sampled-token
reverse KL from a dense teacher or the teacher's token log-probs).
grad_scale multiplies the gradients.

Optimizer: torch.optim.AdamW on a flat f32 arena with a decay and a no-decay
group over 5 steps; the learning-rate schedules of transformers; and
torch.nn.utils.clip_grad_norm_.

Run: python3 tests/reference/losses/make_fixtures.py   (writes next to itself)
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)

N, D, V, TD, K = 16, 24, 97, 20, 6
GRAD_SCALE = 0.25

h32 = torch.randn(N, D, dtype=torch.float32)
w32 = (torch.randn(V, D, dtype=torch.float32) * 0.6)
th32 = torch.randn(N, TD, dtype=torch.float32)
tw32 = (torch.randn(V, TD, dtype=torch.float32) * 0.8)
targets = torch.randint(0, V, (N,), dtype=torch.int32)
for i in (0, 1, 2, 7, 12):  # prompt / padding / document end
    targets[i] = -1

with torch.no_grad():
    tz = th32.double() @ tw32.double().T
    tlogp = F.log_softmax(tz, dim=-1)
    top_lp, top_ids = torch.topk(tlogp, K, dim=-1)
topk_ids = top_ids.to(torch.int32).clone()
topk_lp = top_lp.to(torch.float32).clone()
# One empty slot and a garbage slot at a masked position (never read).
topk_ids[3, K - 1] = -1
topk_lp[3, K - 1] = 0.0
topk_ids[1, 0] = 10**6
# The teacher's log-prob of each target (what an endpoint's prompt_logprobs
# gives on-policy distillation); masked rows hold garbage (never read).
token_lp = torch.full((N,), 5.0, dtype=torch.float32)
for i in range(N):
    if targets[i] >= 0:
        token_lp[i] = float(tlogp[i, int(targets[i])])


def divergence(logq, logp, kind, beta):
    """D(q, p) over the last dim; TRL's generalized JSD."""
    q, p = logq.exp(), logp.exp()
    if kind == "jsd" and beta == 0.0:
        kind = "forward_kl"
    if kind == "jsd" and beta == 1.0:
        kind = "reverse_kl"
    if kind == "forward_kl":
        return torch.where(q > 0, q * (logq - logp), torch.zeros_like(q)).sum(-1)
    if kind == "reverse_kl":
        return (p * (logp - logq)).sum(-1)
    logm = torch.logsumexp(
        torch.stack([logq + math.log(beta), logp + math.log1p(-beta)]), dim=0)
    klq = torch.where(q > 0, q * (logq - logm), torch.zeros_like(q)).sum(-1)
    klp = (p * (logp - logm)).sum(-1)
    return beta * klq + (1 - beta) * klp


def compute(case):
    h = h32.double().clone().requires_grad_(True)
    w = w32.double().clone().requires_grad_(True)
    zs = h @ w.T
    mask = targets >= 0
    y = targets.long()
    ce = F.cross_entropy(zs[mask], y[mask], reduction="sum")
    T = case["temperature"]
    kd = torch.zeros(())
    teacher = case["teacher"]
    if case["kd_weight"] > 0 and teacher == "dense":
        tzz = th32.double() @ tw32.double().T
        logq = F.log_softmax(tzz[mask] / T, -1)
        logp = F.log_softmax(zs[mask] / T, -1)
        kd = divergence(logq, logp, case["divergence"], case["jsd_beta"]).sum() * T * T
    elif case["kd_weight"] > 0 and teacher == "topk":
        logp_full = F.log_softmax(zs / T, -1)
        for i in range(N):
            if targets[i] < 0:
                continue
            ids = [int(t) for t in topk_ids[i] if t >= 0]
            lps = torch.tensor([float(topk_lp[i, j]) for j in range(K) if topk_ids[i, j] >= 0])
            idx = torch.tensor(ids, dtype=torch.long)
            if case["topk_tail"] == "tail":
                keep = torch.ones(V, dtype=torch.bool)
                keep[idx] = False
                p_tail = logp_full[i][keep].exp().sum()
                logP = torch.cat([p_tail.log().reshape(1), logp_full[i][idx]])
                q_tail = max(1.0 - float(lps.exp().sum()), 0.0)
                if T == 1.0:
                    logQ = torch.cat([torch.tensor([math.log(q_tail)]), lps])
                else:
                    nt = V - len(ids)
                    u = torch.cat([torch.tensor([math.log(nt) + (math.log(q_tail) - math.log(nt)) / T]),
                                   lps / T])
                    logQ = F.log_softmax(u, -1)
            else:
                logP = F.log_softmax(zs[i][idx] / T, -1)
                logQ = F.log_softmax(lps / T, -1)
            kd = kd + divergence(logQ, logP, case["divergence"], case["jsd_beta"]) * T * T
    surrogate = kd
    if case["kd_weight"] > 0 and case["divergence"] == "sampled_reverse_kl":
        # On-policy distillation's per-token estimator (targets = the
        # student's own samples): k = log p(y) - log q(y) is the value, and
        # the gradient is the policy gradient of sum sg(k) * log p(y).
        logp_y = F.log_softmax(zs[mask], -1).gather(1, y[mask][:, None])[:, 0]
        if teacher == "dense":
            tzz = th32.double() @ tw32.double().T
            logq_y = F.log_softmax(tzz[mask], -1).gather(1, y[mask][:, None])[:, 0]
        else:  # "tokens"
            logq_y = token_lp.double()[mask]
        k = logp_y - logq_y
        kd = k.sum()
        surrogate = (k.detach() * logp_y).sum()
    loss = case["ce_weight"] * ce + case["kd_weight"] * kd
    ((case["ce_weight"] * ce + case["kd_weight"] * surrogate) * GRAD_SCALE).backward()
    return loss.item(), ce.item(), float(kd.detach()), h.grad, w.grad


def case(name, teacher="none", ce_weight=1.0, kd_weight=0.0, divergence="forward_kl",
         jsd_beta=0.5, temperature=1.0, topk_tail="tail"):
    return dict(name=name, teacher=teacher, ce_weight=ce_weight, kd_weight=kd_weight,
                divergence=divergence, jsd_beta=jsd_beta, temperature=temperature,
                topk_tail=topk_tail)


CASES = [
    case("ce"),
    case("dense_fkl_t1", "dense", 0.5, 1.0, "forward_kl"),
    case("dense_rkl_t2", "dense", 1.0, 0.7, "reverse_kl", temperature=2.0),
    case("dense_jsd_t15", "dense", 0.0, 1.0, "jsd", jsd_beta=0.3, temperature=1.5),
    case("dense_jsd_b0", "dense", 1.0, 1.0, "jsd", jsd_beta=0.0),
    case("dense_jsd_b1", "dense", 1.0, 1.0, "jsd", jsd_beta=1.0, temperature=2.0),
    case("topk_tail_fkl_t1", "topk", 1.0, 1.0, "forward_kl"),
    case("topk_tail_rkl_t1", "topk", 0.5, 2.0, "reverse_kl"),
    case("topk_tail_jsd_t2", "topk", 1.0, 1.0, "jsd", jsd_beta=0.5, temperature=2.0),
    case("topk_tail_fkl_t2", "topk", 0.0, 1.0, "forward_kl", temperature=2.0),
    case("topk_renorm_fkl_t2", "topk", 1.0, 1.0, "forward_kl", temperature=2.0, topk_tail="renormalize"),
    case("topk_renorm_jsd_t1", "topk", 1.0, 0.5, "jsd", jsd_beta=0.7, topk_tail="renormalize"),
    case("topk_renorm_rkl_t1", "topk", 1.0, 1.0, "reverse_kl", topk_tail="renormalize"),
    case("dense_sampled", "dense", 0.0, 1.0, "sampled_reverse_kl"),
    case("tokens_sampled", "tokens", 0.0, 1.0, "sampled_reverse_kl"),
    case("tokens_sampled_ce", "tokens", 0.5, 2.0, "sampled_reverse_kl"),
]

tensors = {
    "h": h32, "w": w32, "th": th32, "tw": tw32, "targets": targets,
    "topk_ids": topk_ids, "topk_logprobs": topk_lp, "token_logprobs": token_lp,
}
meta = {"n": N, "d": D, "vocab": V, "teacher_dim": TD, "k": K, "grad_scale": GRAD_SCALE,
        "cases": []}
for c in CASES:
    loss, ce, kd, dh, dw = compute(c)
    c = dict(c, loss=loss, ce=ce, kd=kd)
    meta["cases"].append(c)
    tensors[c["name"] + ".dh"] = dh.to(torch.float32)
    tensors[c["name"] + ".dw"] = dw.to(torch.float32)
save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(HERE, "losses.safetensors"))
with open(os.path.join(HERE, "losses.json"), "w") as f:
    json.dump(meta, f, indent=1)

# ---------------------------------------------------------------------------
# AdamW: a flat arena of 3 tensors; group 0 (decay) = [0, 40) + [70, 100),
# group 1 (no decay) = [40, 70).
torch.manual_seed(1)
NP = 100
STEPS = 5
p0 = torch.randn(NP, dtype=torch.float32)
grads = torch.randn(STEPS, NP, dtype=torch.float32) * torch.tensor([0.1, 1.0, 3.0, 0.01, 0.5]).float()[:, None]
lrs = [1e-3, 3e-3, 2e-3, 5e-4, 1e-2]
BETAS, EPS, WD = (0.9, 0.95), 1e-8, 0.1
arena = torch.nn.Parameter(p0.clone())
# torch groups need separate tensors: three views as leaf params.
pa = torch.nn.Parameter(p0[0:40].clone())
pb = torch.nn.Parameter(p0[40:70].clone())
pc = torch.nn.Parameter(p0[70:100].clone())
opt = torch.optim.AdamW([{"params": [pa, pc], "weight_decay": WD},
                         {"params": [pb], "weight_decay": 0.0}],
                        lr=lrs[0], betas=BETAS, eps=EPS, foreach=False)
after = []
for s in range(STEPS):
    for g in opt.param_groups:
        g["lr"] = lrs[s]
    pa.grad = grads[s, 0:40].clone()
    pb.grad = grads[s, 40:70].clone()
    pc.grad = grads[s, 70:100].clone()
    opt.step()
    after.append(torch.cat([pa.detach(), pb.detach(), pc.detach()]))
st = opt.state
m = torch.cat([st[pa]["exp_avg"], st[pb]["exp_avg"], st[pc]["exp_avg"]])
v = torch.cat([st[pa]["exp_avg_sq"], st[pb]["exp_avg_sq"], st[pc]["exp_avg_sq"]])

# clip_grad_norm_ on two tensors (as one arena), clipping and not clipping.
torch.manual_seed(2)
cg = torch.randn(257, dtype=torch.float32) * 0.3
clip = {}
for name, max_norm in (("clip_small", 1.0), ("clip_large", 100.0)):
    a = torch.nn.Parameter(torch.zeros(200, dtype=torch.float32))
    b = torch.nn.Parameter(torch.zeros(57, dtype=torch.float32))
    a.grad = cg[:200].clone()
    b.grad = cg[200:].clone()
    norm = torch.nn.utils.clip_grad_norm_([a, b], max_norm)
    clip[name] = dict(max_norm=max_norm, norm=float(norm), out=torch.cat([a.grad, b.grad]))

save_file({"p0": p0, "grads": grads.contiguous(), "after": torch.stack(after).contiguous(),
           "m": m.contiguous(), "v": v.contiguous(), "clip_in": cg,
           "clip_small": clip["clip_small"]["out"], "clip_large": clip["clip_large"]["out"]},
          os.path.join(HERE, "adamw.safetensors"))

# Schedules (transformers' definitions), lr multipliers at steps 0..TOTAL.
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_cosine_with_min_lr_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

TOTAL, WARM, PEAK = 50, 7, 2e-3


def lrs_of(make):
    o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    sch = make(o)
    out = []
    for _ in range(TOTAL + 1):
        out.append(o.param_groups[0]["lr"])
        o.step()
        sch.step()
    return out


sched = {
    "total_steps": TOTAL, "warmup_steps": WARM, "peak_lr": PEAK,
    "cosine": lrs_of(lambda o: get_cosine_schedule_with_warmup(o, WARM, TOTAL)),
    "linear": lrs_of(lambda o: get_linear_schedule_with_warmup(o, WARM, TOTAL)),
    "constant": lrs_of(lambda o: get_constant_schedule_with_warmup(o, WARM)),
    "cosine_min_lr": {"min_lr": 2e-4, "lrs": lrs_of(
        lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, WARM, TOTAL, min_lr=2e-4))},
}
with open(os.path.join(HERE, "adamw.json"), "w") as f:
    json.dump({"n": NP, "steps": STEPS, "lrs": lrs, "beta1": BETAS[0], "beta2": BETAS[1],
               "eps": EPS, "weight_decay": WD,
               "groups": [[0, 40, True], [40, 70, False], [70, 100, True]],
               "clip": {k: {"max_norm": c["max_norm"], "norm": c["norm"]} for k, c in clip.items()},
               "schedules": sched}, f, indent=1)
print("wrote", HERE)
