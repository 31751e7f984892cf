#!/usr/bin/env python3
"""Tiny random Llama-family checkpoints and the logits transformers computes for them.

Each fixture folder holds what `save_pretrained` wrote (config.json +
model.safetensors) and expected.safetensors with
  tokens  I32 [T]        the input sequence
  logits  F32 [T, vocab] transformers' logits (f32, eager attention)
Run from anywhere: python3 tests/reference/models/make_fixtures.py
(needs torch + transformers; the outputs are committed, CI never runs this).
"""
import os
import shutil

import torch
from safetensors.torch import save_file
import transformers
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config,
                          Qwen3Config)

HERE = os.path.dirname(os.path.abspath(__file__))
COMMON = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
              max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
TOKENS = [1, 17, 250, 3, 99, 318, 42, 42, 7, 128, 200, 5]


def randomize(model, seed):
    """Every parameter random (HF init leaves biases 0 and norms 1, which would
    let a missing bias or norm weight go unnoticed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def logits_of(model, tokens):
    with torch.no_grad():
        out = model(torch.tensor([tokens]), use_cache=False)
    return out.logits[0].float().contiguous()


def write(name, config, seed, dtype=torch.float32, extra_sequences=()):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    randomize(model, seed)
    if dtype != torch.float32:
        model = model.to(dtype)
    out_dir = os.path.join(HERE, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    # Reference in f32 from the stored (possibly bf16/f16) weights: reload the
    # saved checkpoint as f32 (not model.float(), which would also keep the
    # bf16-rounded RoPE inv_freq buffer that .to(bfloat16) produced).
    ref = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32,
                                               attn_implementation="eager").eval()
    tensors = {"tokens": torch.tensor(TOKENS, dtype=torch.int32), "logits": logits_of(ref, TOKENS)}
    for i, seq in enumerate(extra_sequences):
        tensors[f"tokens_{i + 1}"] = torch.tensor(seq, dtype=torch.int32)
        tensors[f"logits_{i + 1}"] = logits_of(ref, seq)
    save_file(tensors, os.path.join(out_dir, "expected.safetensors"), metadata={"format": "pt"})
    print(name, {k: tuple(v.shape) for k, v in tensors.items()})


def main():
    print("transformers", transformers.__version__, "torch", torch.__version__)
    g = torch.Generator().manual_seed(7)
    long_seq = torch.randint(0, 320, (80,), generator=g).tolist()

    # Llama: llama3 rope scaling whose wavelengths fall in all three bands
    # (unchanged, smoothed, divided by factor), untied lm_head.
    llama = LlamaConfig(**COMMON, rope_theta=10000.0, tie_word_embeddings=False,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 64})
    write("llama", llama, 1, extra_sequences=[long_seq])
    write("llama_bf16", llama, 1, dtype=torch.bfloat16)

    # Qwen2: q/k/v biases, tied embeddings.
    qwen2 = Qwen2Config(**COMMON, rope_theta=1000000.0, tie_word_embeddings=True)
    write("qwen2", qwen2, 2)
    write("qwen2_f16", qwen2, 2, dtype=torch.float16)

    # Qwen3: q/k RMSNorm per head, head_dim (24) != hidden / heads (16).
    qwen3 = Qwen3Config(**COMMON, head_dim=24, rope_theta=1000000.0, tie_word_embeddings=False)
    write("qwen3", qwen3, 3)

    # Mistral: sliding window shorter than the sequence.
    mistral = MistralConfig(**COMMON, rope_theta=10000.0, sliding_window=5, tie_word_embeddings=False)
    write("mistral", mistral, 4)


if __name__ == "__main__":
    main()
