#!/usr/bin/env python3
"""PyTorch CPU baseline for benchmarks/train_bench: the same model, batch and
threads, one optimizer step = forward + backward + AdamW, f32.

Not run in CI (torch is not a CI dependency). By hand:
  pip install torch transformers
  python3 benchmarks/train_torch_baseline.py --preset 30m --seq 256 --rows 4 --threads 2
Prints one JSON object: tokens/s and achieved GFLOP/s (6 * params * tokens),
the process CPU seconds per step (cpu/wall near the thread count means the
threads really ran; less means other processes held the cores) and the
1-minute load average before and after.
"""
import argparse
import json
import os
import time

import torch
import transformers

# Same shapes as model/init.cc's presets (hidden, layers, heads, kv heads,
# intermediate, vocab).
PRESETS = {
    "tiny": (64, 2, 4, 2, 128, 512),
    "20m": (384, 6, 6, 2, 1024, 32000),
    "30m": (512, 6, 8, 2, 1024, 32000),
    "100m": (768, 12, 12, 4, 2048, 32000),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="30m", choices=sorted(PRESETS))
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, layers, heads, kv, inter, vocab = PRESETS[args.preset]
    cfg = transformers.LlamaConfig(
        hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
        max_position_embeddings=4096, tie_word_embeddings=True, rms_norm_eps=1e-5)
    model = transformers.LlamaForCausalLM(cfg).float()
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    ids = torch.randint(0, vocab, (args.rows, args.seq))
    tokens = args.rows * args.seq

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    load_before = os.getloadavg()[0]
    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t0) / args.steps
    cpu = (time.process_time() - c0) / args.steps
    print(json.dumps({
        "impl": f"torch {torch.__version__} / transformers {transformers.__version__}",
        "preset": args.preset, "params": n_params, "seq": args.seq, "rows": args.rows,
        "threads": args.threads, "step_s": dt, "tokens_per_s": tokens / dt,
        "gflops": 6 * n_params * tokens / dt / 1e9,
        "step_cpu_s": cpu,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }))


if __name__ == "__main__":
    main()
