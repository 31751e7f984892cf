#!/usr/bin/env python3
"""Writes the JSONL dialect fixtures for tests/formats/traces_test.cc.

dialects.jsonl: one line per dialect retort's trace reader accepts, written by
Python's json module (ensure_ascii on some lines, so non-ASCII text arrives as
\\uXXXX escapes and surrogate pairs, off on others). expected.json: for each
line, the samples the reader must produce, computed here independently
(think tags split with str.partition).

Run from the repository root: python3 tests/reference/traces/make_fixtures.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def split_think(text):
    """<think>R</think>A -> (R.strip(), A.strip()); mirrors the documented rule."""
    if "<think>" not in text and "</think>" not in text:
        return None
    before, _, rest = text.partition("<think>") if "<think>" in text else ("", "", text)
    reasoning, closed, after = rest.partition("</think>")
    if not closed:
        return reasoning.strip(), before.strip()
    before, after = before.strip(), after.strip()
    answer = after if not before else before if not after else before + "\n\n" + after
    return reasoning.strip(), answer


def msg(role, content, reasoning=None):
    out = {"role": role, "content": content}
    if role == "assistant":
        if reasoning is None:
            split = split_think(content)
            if split:
                reasoning, out["content"] = split
        out["reasoning_content"] = reasoning or ""
    return out


lines = []    # (json text)
expected = []  # list of samples per line

# 1. Native / open-r1 trace line (what retort generate writes).
native = {
    "id": "aime-2024-07", "sample": 2,
    "messages": [
        {"role": "user", "content": "Find x if 2x + 3 = 11. Put the answer in \\boxed{}."},
        {"role": "assistant", "content": "x = \\boxed{4}",
         "reasoning_content": "Subtract 3: 2x = 8, so x = 4. \u2713"},
    ],
    "answer": "4", "correct": True, "finish_reason": "stop",
    "prompt_tokens": 31, "completion_tokens": 42, "time_s": 1.25,
    "verifier": "math", "source": "aime",
}
lines.append(json.dumps(native))
expected.append([{"id": "aime-2024-07", "sample": 2, "messages": native["messages"],
                  "answer": "4", "correct": True, "finish_reason": "stop",
                  "prompt_tokens": 31, "completion_tokens": 42, "time_s": 1.25,
                  "verifier": "math", "extra": {"source": "aime"}}])

# 2. OpenAI chat, think tags inside the assistant content, non-ASCII escaped.
chat = {"messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Caf\u00e9 \U0001F600 \u2014 say hi"},
    {"role": "assistant", "content": "<think>\nThe user greets.\n</think>\n\nHi! \U0001F44B"},
]}
lines.append(json.dumps(chat))  # ensure_ascii: surrogate pairs
expected.append([{"id": "2", "sample": 0, "messages": [
    msg("system", "You are terse."), msg("user", "Caf\u00e9 \U0001F600 \u2014 say hi"),
    msg("assistant", chat["messages"][2]["content"])]}])

# 3. ShareGPT.
share = {"conversations": [
    {"from": "system", "value": "Be brief."},
    {"from": "human", "value": "2+2?"},
    {"from": "gpt", "value": "4"},
]}
lines.append(json.dumps(share, ensure_ascii=False))
expected.append([{"id": "3", "sample": 0, "messages": [
    msg("system", "Be brief."), msg("user", "2+2?"), msg("assistant", "4")]}])

# 4. open-r1 columns (OpenR1-Math-220k layout): messages present -> used.
r1_text = "<think>\nLet me compute 6*7.\n</think>\n\nThe answer is $\\boxed{42}$."
r1 = {
    "problem": "What is 6*7?", "solution": "6*7 = 42.", "answer": "42",
    "problem_type": "Algebra", "uuid": "0f3c-42",
    "generations": [r1_text, "<think>\nGuess.\n</think>\n\n41"],
    "correctness_math_verify": [True, False],
    "messages": [{"role": "user", "content": "What is 6*7?"},
                 {"role": "assistant", "content": r1_text}],
}
lines.append(json.dumps(r1, ensure_ascii=False))
expected.append([{"id": "0f3c-42", "sample": 0, "answer": "42",
                  "messages": [msg("user", "What is 6*7?"), msg("assistant", r1_text)],
                  "extra": {"problem_type": "Algebra"}}])

# 5. open-r1 columns without messages: one sample per generation.
r1g = {k: v for k, v in r1.items() if k != "messages"}
r1g["uuid"] = "0f3c-43"
lines.append(json.dumps(r1g))
expected.append([
    {"id": "0f3c-43", "sample": i, "answer": "42", "correct": ok, "verifier": "math_verify",
     "messages": [msg("user", "What is 6*7?"), msg("assistant", g)],
     "extra": {"problem_type": "Algebra"}}
    for i, (g, ok) in enumerate(zip(r1g["generations"], r1g["correctness_math_verify"]))])

# 6. prompt/generation columns; R1 completion whose prompt ended in <think>
#    (no opening tag), numeric answer, solution ignored when answer present.
pg = {"prompt": "Compute 1+1.", "generation": "1+1 is 2.\n</think>\n\n**2**", "answer": 2,
      "solution": "2"}
lines.append(json.dumps(pg))
expected.append([{"id": "6", "sample": 0, "answer": "2",
                  "messages": [msg("user", "Compute 1+1."), msg("assistant", pg["generation"])]}])

# 7. Cut by the length limit inside the think block.
cut = {"id": "long-1", "sample": 0, "finish_reason": "length", "messages": [
    {"role": "user", "content": "Prove it."},
    {"role": "assistant", "content": "<think>\nFirst, consider"}]}
lines.append(json.dumps(cut))
expected.append([{"id": "long-1", "sample": 0, "finish_reason": "length",
                  "messages": [msg("user", "Prove it."),
                               msg("assistant", "<think>\nFirst, consider")]}])

with open(os.path.join(HERE, "dialects.jsonl"), "w", encoding="utf-8", newline="\n") as f:
    for line in lines:
        f.write(line + "\n")
with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
    json.dump(expected, f, ensure_ascii=False, indent=1)
    f.write("\n")
