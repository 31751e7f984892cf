#!/usr/bin/env python3
"""Renders the committed chat templates with transformers' apply_chat_template.

Writes fixtures.json: one case per (template, conversation, add_generation_prompt)
with the exact string transformers produces, or the error it raises. The C++
test (tests/model/chat_template_test.cc) renders the same inputs and compares.

Time: templates that call strftime_now() see a frozen clock. transformers'
strftime_now reads `datetime.now()` from transformers.utils.chat_template_utils,
which is patched here to FIXED_NOW; the C++ side gets the same instant through
ChatTemplate::SetFixedNow (the case's "fixed_now" field).

Usage: python3 make_fixtures.py            # rewrites fixtures.json
       python3 make_fixtures.py --crosscheck-r1 DIR
           # also renders the tool-free R1 cases with DIR/deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja
           # (llama.cpp's re-indented copy) and checks the outputs match the transcribed template.
"""
import argparse
import datetime as real_datetime
import json
import os

import jinja2
import tokenizers
import transformers
import transformers.utils.chat_template_utils as ctu
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
FIXED_NOW = real_datetime.datetime(2024, 9, 5, 10, 30, 0)


class _FrozenDatetime(real_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


ctu.datetime = _FrozenDatetime  # strftime_now() calls datetime.now()

# Special tokens as each model's tokenizer_config.json / special_tokens_map.json sets them.
SPECIAL = {
    "smollm2_instruct.jinja": dict(bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>"),
    "qwen2_5_instruct.jinja": dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
    "qwen3.jinja": dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
    "deepseek_r1_distill_qwen.jinja": dict(bos_token="<｜begin▁of▁sentence｜>",
                                           eos_token="<｜end▁of▁sentence｜>",
                                           pad_token="<｜end▁of▁sentence｜>"),
    "llama3_1_instruct.jinja": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"),
    "llama3_2_instruct.jinja": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"),
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}

CONVERSATIONS = {
    "single_user": [{"role": "user", "content": "Hello! What is 2+2?"}],
    "system_user": [
        {"role": "system", "content": "You are a terse assistant.  "},
        {"role": "user", "content": "  Name three primes.\n"},
    ],
    "multi_turn": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the GPU cross the road? To get to the other tensor."},
        {"role": "user", "content": "Another one."},
    ],
    "reasoning": [
        {"role": "user", "content": "What is 17*3?"},
        {"role": "assistant",
         "content": "<think>\n17*3 = 51. Check: 51/3 = 17.\n</think>\n\nThe answer is 51."},
        {"role": "user", "content": "And 17*4?"},
    ],
    "reasoning_last": [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "<think>\nsmall sum\n</think>\n\n5"},
    ],
    "reasoning_field": [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris.", "reasoning_content": "The user asks a geography question."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome.", "reasoning_content": "Italy's capital is Rome."},
    ],
    "unicode": [
        {"role": "system", "content": "Réponds en français. 日本語も可。"},
        {"role": "user",
         "content": "Héllo, 世界! 🚀 «quotes» \"double\" 'single' \\ back\\slash\ttab\nnew line {{ not jinja }} {% raw %}"},
    ],
    "empty_content": [
        {"role": "user", "content": ""},
    ],
    "tools": [
        {"role": "system", "content": "You can look up the weather."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {
             "name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}}]},
        {"role": "tool", "name": "get_weather", "content": "{\"temperature\": 22, \"sky\": \"clear\"}"},
        {"role": "assistant", "content": "It is 22 °C and clear in Paris."},
        {"role": "user", "content": "Thanks!"},
    ],
    "tools_parallel": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None,
         "tool_calls": [
             {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Paris"}}},
             {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Rome"}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rainy"},
    ],
    # R1-Distill concatenates arguments, so they must already be a JSON string.
    "r1_tools": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {
             "name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}]},
        {"role": "tool", "content": "{\"temperature\": 22}"},
        {"role": "tool", "content": "{\"humidity\": 40}"},
        {"role": "assistant", "content": "22 degrees."},
    ],
}

BASIC = ["single_user", "system_user", "multi_turn", "reasoning", "unicode", "empty_content"]

# (template, conversation, extra template kwargs, with tools?)
PLAN = []
for name in ["smollm2_instruct.jinja", "qwen2_5_instruct.jinja", "deepseek_r1_distill_qwen.jinja",
             "llama3_1_instruct.jinja", "llama3_2_instruct.jinja", "qwen3.jinja"]:
    for conv in BASIC:
        PLAN.append((name, conv, {}, False))
PLAN += [
    ("deepseek_r1_distill_qwen.jinja", "reasoning_last", {}, False),
    ("deepseek_r1_distill_qwen.jinja", "r1_tools", {}, False),
    ("qwen2_5_instruct.jinja", "tools", {}, True),
    ("qwen2_5_instruct.jinja", "tools_parallel", {}, True),
    ("qwen2_5_instruct.jinja", "single_user", {}, True),
    ("llama3_1_instruct.jinja", "tools", {}, True),
    ("llama3_1_instruct.jinja", "tools", {"tools_in_user_message": False}, True),
    ("llama3_1_instruct.jinja", "single_user", {"builtin_tools": ["brave_search", "code_interpreter"]}, False),
    ("llama3_1_instruct.jinja", "tools_parallel", {}, True),  # raises: single tool-calls only
    ("llama3_1_instruct.jinja", "system_user", {"date_string": "01 Jan 2025"}, False),
    ("llama3_2_instruct.jinja", "tools", {}, True),
    ("llama3_2_instruct.jinja", "system_user", {"date_string": "01 Jan 2025"}, False),
    ("qwen3.jinja", "reasoning_last", {}, False),
    ("qwen3.jinja", "reasoning_field", {}, False),
    ("qwen3.jinja", "single_user", {"enable_thinking": False}, False),
    ("qwen3.jinja", "multi_turn", {"enable_thinking": True}, False),
    ("qwen3.jinja", "tools", {}, True),
    ("qwen3.jinja", "tools_parallel", {}, True),
]


def make_tokenizer(template_name, template_text):
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template_text,
                                   **SPECIAL[template_name])


def render(template_name, template_text, messages, add_generation_prompt, kwargs, tools):
    tokenizer = make_tokenizer(template_name, template_text)
    try:
        out = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                            add_generation_prompt=add_generation_prompt, **kwargs)
        return {"expected": out}
    except jinja2.exceptions.TemplateError as e:
        return {"error": str(e)}
    except (TypeError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crosscheck-r1", metavar="DIR")
    args = ap.parse_args()

    cases = []
    for template_name, conv, kwargs, with_tools in PLAN:
        text = open(os.path.join(HERE, template_name), encoding="utf-8").read()
        for gen in (False, True):
            tools = [WEATHER_TOOL] if with_tools else None
            result = render(template_name, text, CONVERSATIONS[conv], gen, kwargs, tools)
            extra = dict(SPECIAL[template_name])
            extra.update(kwargs)
            if tools is not None:
                extra["tools"] = tools
            case = {
                "template": template_name,
                "conversation": conv,
                "add_generation_prompt": gen,
                "messages": CONVERSATIONS[conv],
                "extra_context": extra,
                "fixed_now": FIXED_NOW.strftime("%Y-%m-%d %H:%M:%S"),
            }
            case.update(result)
            cases.append(case)

    if args.crosscheck_r1:
        other = open(os.path.join(args.crosscheck_r1, "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"),
                     encoding="utf-8").read()
        n = 0
        for c in cases:
            if c["template"] != "deepseek_r1_distill_qwen.jinja" or c["conversation"] == "r1_tools":
                continue
            got = render(c["template"], other, c["messages"], c["add_generation_prompt"], {}, None)
            assert got == {k: c[k] for k in ("expected", "error") if k in c}, (c["conversation"], got)
            n += 1
        print(f"R1 cross-check: {n} cases identical")

    doc = {
        "generator": "tests/reference/chat_templates/make_fixtures.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "tokenizers": tokenizers.__version__,
        "cases": cases,
    }
    with open(os.path.join(HERE, "fixtures.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases, {sum('error' in c for c in cases)} expected errors")


if __name__ == "__main__":
    main()
