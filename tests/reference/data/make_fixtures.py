#!/usr/bin/env python3
"""Fixtures for tests/distill/data_test.cc: how a chat sample becomes a
training example (prompt ids with loss mask 0, completion ids with mask 1).

For each (template, tokenizer, conversation) the script records what
transformers' apply_chat_template renders and what `tokenizers` encodes:

  prompt_text     = apply_chat_template(messages[:-1], add_generation_prompt=True)
  completion_text = the final assistant turn as the model must produce it,
                    end-of-turn marker included, derived WITHOUT the C++
                    algorithm (no sentinel trick):
      * ChatML templates (SmolLM2, Qwen2.5) and Qwen3: render the whole
        conversation with the final turn carrying its reasoning inline
        ("<think>\\n" + reasoning + "\\n</think>\\n\\n" + content), or, for
        Qwen3, as `reasoning_content` (Qwen3 renders it itself); the
        completion is what follows prompt_text (asserted to be a prefix);
      * R1-Distill drops "<think>" from assistant turns when rendering
        history, so its completion is spelled out from the model card's
        output format: the generation prompt already ends with "<think>\\n",
        the model writes reasoning + "\\n</think>\\n\\n" + answer + EOS.
  prompt_ids      = encode(prompt_text, add_special_tokens=True) with a
                    doubled leading BOS collapsed to one (the template
                    renders bos_token itself),
  completion_ids  = encode(completion_text, add_special_tokens=False).

Tokenizers: the committed SmolLM2 and Qwen2 tokenizer.json files in
tests/reference/tokenizers/ and the R1-Distill-Qwen variant recorded there
(Qwen2 vocabulary + its added tokens / BOS post-processor). Templates: the
files in tests/reference/chat_templates/ (see PROVENANCE.md there).

Also writes corpus.txt (a small plain-text corpus) with its documents'
ids under SmolLM2 ("corpus" in the output).

Also records EpochPermutation(n, seed, epoch) computed by an independent
Python transcription of the published xoshiro256** / splitmix64 algorithms
("permutations"), pinning the shuffle bit-for-bit across platforms.

Run: python3 make_fixtures.py   (needs transformers, tokenizers, zstd CLI);
deterministic output.
"""
import json
import os
import subprocess

import tokenizers
import transformers
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
TOKDIR = os.path.join(ROOT, "tests", "reference", "tokenizers")
TPLDIR = os.path.join(ROOT, "tests", "reference", "chat_templates")


def tokenizer_json(name):
    expected = json.load(open(os.path.join(TOKDIR, "expected.json"), encoding="utf-8"))
    entry = next(t for t in expected["tokenizers"] if t["name"] == name)
    raw = subprocess.run(["zstd", "-dc", os.path.join(TOKDIR, entry["base"])],
                         check=True, capture_output=True).stdout
    j = json.loads(raw)
    for k, v in entry.get("overrides", {}).items():
        if k.startswith("model."):
            j["model"][k[6:]] = v
        else:
            j[k] = v
    return j


def make_tokenizer(tok_name, template_file, bos, eos):
    tok = tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json(tok_name)))
    with open(os.path.join(TPLDIR, template_file), encoding="utf-8") as f:
        template = f.read()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
    hf.chat_template = template
    return tok, hf


SETUPS = {
    # name: (tokenizer, template, bos, eos, style)
    "smollm2": ("smollm2", "smollm2_instruct.jinja", "<|im_start|>", "<|im_end|>", "inline"),
    "qwen2_5": ("qwen2", "qwen2_5_instruct.jinja", None, "<|im_end|>", "inline"),
    "qwen3": ("qwen2", "qwen3.jinja", None, "<|im_end|>", "reasoning_content"),
    "r1_distill": ("r1_distill_qwen", "deepseek_r1_distill_qwen.jinja",
                   "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "r1"),
}

CONVERSATIONS = {
    "single": [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "2 + 3 = 5."},
    ],
    "system": [
        {"role": "system", "content": "You are a terse math tutor."},
        {"role": "user", "content": "Square root of 144?"},
        {"role": "assistant", "content": "12"},
    ],
    "multi_turn": [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one, larger than 10?"},
        {"role": "assistant", "content": "13 is prime."},
    ],
    "reasoning": [
        {"role": "user", "content": "Is 91 prime? Answer in \\boxed{}."},
        {"role": "assistant",
         "reasoning_content": "91 = 7 * 13, so it has divisors other than 1 and itself.",
         "content": "No: 91 = 7 × 13, so the answer is \\boxed{no}."},
    ],
    "unicode": [
        {"role": "user", "content": "Traduis « chat » en japonais 🐱"},
        {"role": "assistant", "content": "猫 (neko)"},
    ],
}


def completion_for(setup, conv, prompt, hf):
    style = SETUPS[setup][4]
    final = conv[-1]
    reasoning = final.get("reasoning_content")
    content = final["content"]
    if style == "r1":
        assert prompt.endswith("<think>\n"), prompt
        body = (reasoning + "\n</think>\n\n" + content) if reasoning else content
        return body + "<｜end▁of▁sentence｜>"
    if style == "reasoning_content":
        full = hf.apply_chat_template(conv, tokenize=False)
    else:
        inline = ("<think>\n" + reasoning + "\n</think>\n\n" + content) if reasoning else content
        full = hf.apply_chat_template(conv[:-1] + [{"role": "assistant", "content": inline}],
                                      tokenize=False)
    assert full.startswith(prompt), (setup, full, prompt)
    return full[len(prompt):]


M64 = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Xoshiro256ss:
    def __init__(self, seed):
        self.s = []
        st = seed
        for _ in range(4):
            st, v = splitmix64(st)
            self.s.append(v)

    def next(self):
        s = self.s
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def below(self, n):
        limit = M64 - (M64 % n)
        while True:
            x = self.next()
            if x < limit:
                return x % n


def _first_outputs(seed, n):
    rng = Xoshiro256ss(seed)
    return [rng.next() for _ in range(n)]


def epoch_permutation(n, seed, epoch):
    _, a = splitmix64(seed)
    _, b = splitmix64(epoch ^ 0xD1B54A32D192ED03)
    rng = Xoshiro256ss(a ^ b)
    p = list(range(n))
    for i in range(n, 1, -1):
        j = rng.below(i)
        p[i - 1], p[j] = p[j], p[i - 1]
    return p


def main():
    cases = []
    for setup, (tok_name, template, bos, eos, style) in SETUPS.items():
        tok, hf = make_tokenizer(tok_name, template, bos, eos)
        for conv_name, conv in CONVERSATIONS.items():
            prompt = hf.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
            completion = completion_for(setup, conv, prompt, hf)
            prompt_ids = tok.encode(prompt, add_special_tokens=True).ids
            bos_id = tok.token_to_id(bos) if bos else None
            if bos_id is not None and len(prompt_ids) >= 2 and prompt_ids[0] == bos_id == prompt_ids[1]:
                prompt_ids = prompt_ids[1:]
            completion_ids = tok.encode(completion, add_special_tokens=False).ids
            cases.append({
                "setup": setup, "tokenizer": tok_name, "template": template,
                "bos_token": bos, "eos_token": eos, "conversation": conv_name,
                "messages": conv, "prompt_text": prompt, "completion_text": completion,
                "prompt_ids": prompt_ids, "completion_ids": completion_ids,
            })

    # Plain-text corpus: blank-line separated paragraphs, each encoded
    # without special tokens (SmolLM2's post-processor adds none anyway).
    with open(os.path.join(HERE, "corpus.txt"), encoding="utf-8") as f:
        corpus = f.read()
    docs = [d.strip("\n") for d in corpus.replace("\r\n", "\n").split("\n\n")]
    docs = [d for d in docs if d.strip()]
    tok, _ = make_tokenizer("smollm2", "smollm2_instruct.jinja", "<|im_start|>", "<|im_end|>")
    corpus_docs = [{"text": d, "ids": tok.encode(d, add_special_tokens=False).ids} for d in docs]

    out = {
        "generator": "tests/reference/data/make_fixtures.py",
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "cases": cases,
        "corpus": corpus_docs,
        "permutations": [
            {"n": n, "seed": seed, "epoch": epoch, "perm": epoch_permutation(n, seed, epoch)}
            for (n, seed, epoch) in [(1, 0, 0), (10, 0, 0), (10, 0, 1), (10, 42, 0),
                                     (37, 12345678901234567890, 3), (100, 7, 2**40)]
        ],
        "xoshiro_first_outputs": {"seed": 1, "values": [str(v) for v in _first_outputs(1, 5)]},
    }
    with open(os.path.join(HERE, "chat_examples.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
