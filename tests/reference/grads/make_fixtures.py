#!/usr/bin/env python3
"""Gradients transformers computes for a packed batch of documents.

For each tiny f32 checkpoint of tests/reference/models/ (llama: llama3 rope
scaling, untied; qwen2: q/k/v biases, tied; qwen3: q/k norm, head_dim !=
hidden/heads; mistral: sliding window 5, shorter than the documents), a packed
sequence of 3 documents (15 + 13 + 9 = 37 tokens) is run ONE DOCUMENT AT A
TIME through the model (position ids from 0), which is what document masking
means for the packed sequence. The loss is the sum over documents of the
sum-reduced next-token cross-entropy, with no target at the last token of each
document and at its first 3 ("prompt") positions.

The reference runs in float64 (weights widened from the stored f32) so that the
tolerance of the C++ test measures our f32 error, not PyTorch's.

Writes <name>.safetensors with
  tokens     I32 [T]          packed token ids
  positions  I32 [T]          position within the document
  doc_start  I32 [T]          index of the first token of the token's document
  targets    I32 [T]          next-token target, -100 where there is none
  hidden     F32 [T, hidden]  output of model.model.norm (input of lm_head)
  dhidden    F32 [T, hidden]  d loss / d hidden
  loss       F32 [1]
  grad.<HF parameter name>    F32  d loss / d parameter (tied lm_head: one
                              entry, model.embed_tokens.weight, both uses summed)
Run: python3 tests/reference/grads/make_fixtures.py (needs torch + transformers;
outputs are committed, CI never runs this).
"""
import os

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(os.path.dirname(HERE), "models")
DOC_LENGTHS = [15, 13, 9]
PROMPT = 3  # positions at the start of each document without a target


def packed_batch(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    tokens, positions, doc_start, targets = [], [], [], []
    for length in DOC_LENGTHS:
        start = len(tokens)
        doc = torch.randint(0, vocab, (length,), generator=g).tolist()
        for i in range(length):
            tokens.append(doc[i])
            positions.append(i)
            doc_start.append(start)
            targets.append(doc[i + 1] if PROMPT <= i < length - 1 else -100)
    return tokens, positions, doc_start, targets


def write(name, seed):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, name), dtype=torch.float32,
                                                 attn_implementation="eager")
    model = model.double().train()  # no dropout in these configs; train() only enables grads
    config = model.config
    tokens, positions, doc_start, targets = packed_batch(config.vocab_size, seed)

    captured = []

    def keep(module, inputs, output):  # returns None: the output is unchanged
        output.retain_grad()
        captured.append(output)

    model.model.norm.register_forward_hook(keep)
    model.zero_grad()
    total = torch.zeros((), dtype=torch.float64)
    begin = 0
    for length in DOC_LENGTHS:
        ids = torch.tensor([tokens[begin:begin + length]])
        pos = torch.arange(length).unsqueeze(0)
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        tgt = torch.tensor(targets[begin:begin + length])
        total = total + F.cross_entropy(logits, tgt, ignore_index=-100, reduction="sum")
        begin += length
    total.backward()

    hidden = torch.cat([h[0] for h in captured], dim=0)
    dhidden = torch.cat([h.grad[0] for h in captured], dim=0)
    out = {
        "tokens": torch.tensor(tokens, dtype=torch.int32),
        "positions": torch.tensor(positions, dtype=torch.int32),
        "doc_start": torch.tensor(doc_start, dtype=torch.int32),
        "targets": torch.tensor(targets, dtype=torch.int32),
        "hidden": hidden.detach().float().contiguous(),
        "dhidden": dhidden.detach().float().contiguous(),
        "loss": total.detach().float().reshape(1),
    }
    for pname, p in model.named_parameters():
        out["grad." + pname] = p.grad.detach().float().contiguous()
    save_file(out, os.path.join(HERE, name + ".safetensors"), metadata={"format": "pt"})
    print(name, "loss", float(total), "params", sum(1 for _ in model.named_parameters()))


def main():
    print("transformers", transformers.__version__, "torch", torch.__version__)
    torch.set_num_threads(2)
    for seed, name in enumerate(["llama", "qwen2", "qwen3", "mistral"], start=11):
        write(name, seed)


if __name__ == "__main__":
    main()
