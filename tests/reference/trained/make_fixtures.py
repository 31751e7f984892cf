#!/usr/bin/env python3
"""Logits of a model trained by `retort distill`, computed by transformers.

qwen2_tiny_sft/ is the final/ directory of (retort built from this repo):
  retort init /tmp/q2 --family qwen2 --size tiny --dtype f32 --seed 5
  retort distill /tmp/q2 --data /usr/share/common-licenses/GPL-3 -o /tmp/q2run \
      --seq-len 128 --batch-rows 2 --max-steps 30 --lr 3e-3 --weight-decay 0.1 -q
  cp -r /tmp/q2run/final qwen2_tiny_sft
This script loads it with transformers (f32, eager attention) and writes the
logits of a fixed byte-token sequence to qwen2_tiny_sft_logits.safetensors;
tests/distill/saved_model_test.cc checks our engine gives the same.
Needs torch + transformers (never run in CI).
"""
import os

import torch
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    path = os.path.join(HERE, "qwen2_tiny_sft")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    text = "This License applies to any program or other work which contains a notice"
    ids = torch.tensor([[b + 3 for b in text.encode("utf-8")]])  # byte tokenizer: id = byte + 3
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].contiguous()
    save_file({"token_ids": ids[0].to(torch.int32).contiguous(), "logits": logits},
              os.path.join(HERE, "qwen2_tiny_sft_logits.safetensors"))
    print(f"transformers {transformers.__version__}: logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
