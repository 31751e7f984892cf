#!/usr/bin/env python3
"""What TRL's SFTTrainer sees of our traces.jsonl (tests/distill/data_test.cc).

trl_input.jsonl holds two samples. Line 1 is written as TraceSampleToJsonLine
writes today (the C++ test checks it writes exactly this line): the reasoning
inline in the assistant content. Line 2 is the same sample in the layout we
wrote until 2026-12 (answer in "content", reasoning in "reasoning_content").

For each chat template below, the file is loaded with datasets'
load_dataset("json") and each row goes through TRL's own
trl.data_utils.maybe_apply_chat_template (what SFTTrainer does to a
conversational "messages" dataset) with a transformers tokenizer carrying the
template. trl_rendered.json records the text per template and line. The
finding: SmolLM2's template (like most) drops "reasoning_content", so only
the inline layout keeps the reasoning; Qwen3's renders both.

Needs: transformers, trl (imports without torch: pip install --no-deps trl),
datasets, tokenizers. Run from the repository root:
  python3 tests/reference/traces/make_trl_fixture.py
"""
import json
import os
import subprocess
import tempfile

import datasets
import transformers
import trl
from transformers import PreTrainedTokenizerFast
from trl.data_utils import maybe_apply_chat_template

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
TEMPLATES = os.path.join(HERE, "..", "chat_templates")
TOKENIZER = os.path.join(HERE, "..", "tokenizers", "smollm2.tokenizer.json.zst")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tok_json = os.path.join(tmp, "tokenizer.json")
        subprocess.run(["zstd", "-q", "-d", TOKENIZER, "-o", tok_json], check=True)
        ds = datasets.load_dataset(
            "json", data_files=os.path.join(HERE, "trl_input.jsonl"), split="train",
            cache_dir=os.path.join(tmp, "cache"))
        out = {"versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                            "datasets": datasets.__version__},
               "rendered": {}}
        for name in ["smollm2_instruct", "qwen3"]:
            with open(os.path.join(TEMPLATES, name + ".jinja")) as f:
                template = f.read()
            tok = PreTrainedTokenizerFast(tokenizer_file=tok_json, eos_token="<|im_end|>")
            tok.chat_template = template
            texts = []
            for row in ds:
                # datasets unifies the rows' schemas: a key absent on one line
                # is None on it, as SFTTrainer sees it too.
                texts.append(maybe_apply_chat_template(row, tok)["text"])
            out["rendered"][name] = texts
    with open(os.path.join(HERE, "trl_rendered.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
