#!/usr/bin/env python3
"""Checks that transformers accepts what `retort prune --structured` writes.

transformers 5.x's LlamaConfig refuses hidden_size % num_attention_heads != 0
even when head_dim is given ("The hidden size (320) is not a multiple of the
number of attention heads (9)"); retort's planner keeps Llama widths to that
rule (tests/prune/structured_test.cc PlanTest.LlamaHiddenStaysAMultipleOfTheHeads
checks the rule without Python). This script checks the real thing: a
SmolLM2-shaped Llama (hidden 576, 9 heads of 64, 3 kv heads) is initialised
and pruned by the retort binary, and transformers' AutoConfig loads the
result (with torch installed it also loads the weights and runs a forward).

Run: python3 tests/reference/prune/check_transformers_loads.py build/cli/retort
Needs: transformers (torch optional). CI does not run it.
"""
import json
import os
import subprocess
import sys
import tempfile

from transformers import AutoConfig

GPL = "/usr/share/common-licenses/GPL-3"


def main():
    retort = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/cli/retort")
    with tempfile.TemporaryDirectory() as tmp:
        base, pruned = os.path.join(tmp, "base"), os.path.join(tmp, "pruned")
        subprocess.run([retort, "init", base, "--family", "llama", "--hidden", "576", "--heads",
                        "9", "--kv-heads", "3", "--layers", "2", "--intermediate", "1536",
                        "--tokenizer", "bytes"], check=True, capture_output=True)
        for target in ["60%", "45%"]:
            subprocess.run([retort, "prune", base, pruned, "--structured", "--target-params",
                            target, "--calib", GPL, "--calib-samples", "4"], check=True,
                           capture_output=True)
            with open(os.path.join(pruned, "config.json")) as f:
                written = json.load(f)
            config = AutoConfig.from_pretrained(pruned)
            print(f"target {target}: hidden {written['hidden_size']}, heads "
                  f"{written['num_attention_heads']}, head_dim {written['head_dim']}: "
                  f"transformers loads {type(config).__name__}")
            try:
                import torch  # noqa: F401
                from transformers import AutoModelForCausalLM
                model = AutoModelForCausalLM.from_pretrained(pruned)
                model(torch.tensor([[1, 2, 3]]))
                print("  weights load and run")
            except ImportError:
                pass
            subprocess.run(["rm", "-rf", pruned], check=True)


if __name__ == "__main__":
    main()
