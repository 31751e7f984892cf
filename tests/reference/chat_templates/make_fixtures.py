#!/usr/bin/env python3
"""Renders the committed chat templates with transformers' apply_chat_template.

Writes fixtures.json: one case per (template, conversation, add_generation_prompt)
with the exact string transformers produces, or the error it raises. The C++
test (tests/text/chat_template_test.cc) renders the same inputs and compares.

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


# Small templates that pin down Jinja semantics (whitespace control, scoping,
# Python str()/repr(), filters, tests, undefined) -> jinja_cases.json, rendered
# with the very environment transformers compiles chat templates in.
JINJA_CONTEXT = {"d": {"b": 1, "a": [1, 2.5, None, True, "x"]}, "s": "Héllo wörld", "n": 7, "f": 2.5,
                 "items": [{"name": "b", "v": 2}, {"name": "a", "v": 1}, {"name": "c"}], "empty": [],
                 "nested": {"k": {"deep": "yes"}}, "none_value": None}
JINJA_SNIPPETS = [
    # whitespace control: trim_blocks + lstrip_blocks + - / + modifiers
    "a\n  {% if true %}\n    x\n  {% endif %}\nb",
    "a\n  {%- if true -%}\n    x\n  {%- endif -%}\n  b",
    "a  {% if true %}x{% endif %}  b",
    "line1\n    {# comment #}\nline2",
    "  {{ 'v' }}  \n  {%+ if true %}kept{% endif %}\n",
    "{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n",
    "{%- for i in [1,2] -%}\n  {{- i -}}\n{%- endfor -%}",
    "x {{- ' y ' -}} z",
    "{% raw %}{{ not rendered }}{% endraw %}!",
    "a\r\nb\rc\n",
    "trailing\n\n",
    # scoping
    "{% for i in [1,2] %}{% if i == 2 %}[{{ x }}]{% endif %}{% set x = i %}{% endfor %}[{{x}}]",
    "{% set x = 5 %}{% for i in [1] %}{% set x = 7 %}{{x}}{% endfor %}{{x}}",
    "{% if true %}{% set y = 3 %}{% endif %}{{ y }}",
    "{% set ns = namespace(a=1, l=[]) %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}",
    "{% macro m(a, b='z') %}[{{a}}{{b}}{{ n }}]{% endmacro %}{{ m(1) }}{{ m(1, b=2) }}{{ m(b=3, a=4) }}",
    "{% set t %}  inner {{ n }} {% endset %}[{{ t }}]",
    "{% filter upper %}abc {{ s }}{% endfilter %}",
    "{% set a, b = 1, 2 %}{{a}}{{b}}",
    # loops
    "{% for k, v in d.items() %}{{k}}={{v}};{% endfor %}",
    "{% for i in range(5) if i is odd %}{{loop.index}}/{{loop.length}}{{ ',' if not loop.last }}{% else %}none{% endfor %}",
    "{% for i in empty %}x{% else %}empty{% endfor %}",
    "{% for x in [1,2,3] %}{{ loop.first }}{{ loop.last }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.index0 }}{% if x == 2 %}{% break %}{% endif %}{% endfor %}",
    "{% for x in [1,2,3,4] %}{% if x is even %}{% continue %}{% endif %}{{ x }}{% endfor %}",
    "{% for x in 'abc' %}{{ loop.cycle('o', 'e') }}{{ x }}{% endfor %}",
    "{% for x in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}",
    "{% for k in d %}{{ k }}{% endfor %}",
    "{% for a in [[1,2],[3,4]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}|{{ loop.index }}{% endfor %}",
    # Python str()/repr() of values
    "{{ [1,'a',none,true,1.0,{'k':'v'}] }}",
    "{{ d }} {{ none }} {{ true }} {{ (1,2) }} {{ (1,) }} {{ none_value }}",
    "{{ 1/2 }} {{ 4/2 }} {{ 7//2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2**10 }} {{ 2**-1 }}",
    "{{ 1e20 }} {{ 1.5e-5 }} {{ 100.0 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.1 + 0.2 }} {{ 1/3 }} {{ -2.5 }}",
    "{{ {'a':{'b':1}} }} {{ 'it\\'s' }} {{ [\"it's\", 'a\"b'] }} {{ ['a\\nb\\t\\\\'] }}",
    "{{ 'a\\u00e9\\x41\\t|\\101' }} {{ \"q\\\"q\" }} {{ 'a' 'b' }}",
    # operators
    "{{ 'a' ~ 1 ~ none ~ undefined_name }}|{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}|{{ 'b' > 'a' }}|{{ [1,2] < [1,3] }}",
    "{{ 3.0 == 3 }} {{ true == 1 }} {{ 'x' != 'y' }} {{ [1] == [1] }} {{ d == d }} {{ none == none }}",
    "{{ 'ell' in s }} {{ 'b' in d }} {{ 2 in [1,2] }} {{ 'z' not in s }} {{ 'x' in undefined_name }}",
    "{{ 'abc' * 2 }} {{ [1] + [2] }} {{ 3 * 'ab' }} {{ -n }} {{ +f }} {{ not n }} {{ n and 'y' }} {{ 0 or 'z' }}",
    "{{ 1 if n > 5 else 2 }}|{{ 'v' if false }}|{{ 'a' if none else 'b' if true else 'c' }}",
    "{{ n|string + 'x' }} {{ -1|abs }} {{ 2 + 3 * 4 ** 2 }} {{ (2 + 3) * 4 }} {{ 10 - 2 - 3 }}",
    # indexing and slicing
    "{{ s[0] }}{{ s[-1] }}{{ s[1:4] }}{{ s[::-1] }}{{ s[::2] }}{{ s[-3:] }}{{ s[:100] }}",
    "{{ d.a[1:] }} {{ d.a[-2] }} {{ d['b'] }} {{ d.a.0 }} {{ d.missing }}|{{ [1,2,3][5] }}|{{ nested.k.deep }}",
    "{{ items[0].name }} {{ items[2].v }}| {{ n.foo }}|{{ none_value.x }}|",
    # string methods
    "{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  y '.lstrip() }}|{{ ' z  '.rstrip() }}|{{ '\\n\\tw\\u3000'.strip() }}",
    "{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }}",
    "{{ s.startswith('Hé') }} {{ s.endswith(('x','ld')) }} {{ s.upper() }} {{ s.lower() }} {{ 'ab cd'.title() }} {{ 'aBC'.capitalize() }}",
    "{{ 'a-b-c'.replace('-', '+') }} {{ 'a-b-c'.replace('-', '', 1) }} {{ s.find('w') }} {{ s.count('l') }} {{ '-'.join(['x','y']) }}",
    "{{ 'l1\\nl2\\r\\nl3'.splitlines() }} {{ '123'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' '.isspace() }}",
    "{{ d.get('b') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }}",
    # filters
    "{{ '  x  '|trim }}|{{ 'Hello'|upper }}{{ 'Hello'|lower }}|{{ 'hello world'|capitalize }}|{{ 'hello world'|title }}",
    "{{ [3,1,2]|sort }} {{ [3,1,2]|sort(reverse=true) }} {{ ['b','A','c']|sort }} {{ items|sort(attribute='name')|map(attribute='name')|list }}",
    "{{ [1,2]|join(',') }} {{ items|join('/', attribute='name') }} {{ ['a']|first }} {{ [1,2]|last }} {{ 'abc'|list }} {{ s|length }} {{ d|length }}",
    "{{ x|default('d') }}|{{ ''|default('d', true) }}|{{ none_value|default('nd') }}|{{ none_value|default('nd', true) }}|{{ x|d('short') }}",
    "{{ d|items|list }} {{ d|dictsort }} {{ [1,2,2,3,1]|unique|list }} {{ [1,5,3]|max }} {{ [4,2,8]|min }} {{ [1,2,3]|sum }}",
    "{{ items|selectattr('v')|list }} {{ items|rejectattr('v')|list }} {{ items|selectattr('v', 'equalto', 2)|list }} {{ [1,2,3,4]|select('odd')|list }} {{ [1,2,3,4]|reject('even')|list }}",
    "{{ items|map(attribute='v', default=0)|list }} {{ ['a','b']|map('upper')|list }} {{ [1,'2','x']|map('int')|list }}",
    "{{ '5'|int + 1 }} {{ 2.7|int }} {{ 'x'|int(3) }} {{ '3.7'|float }} {{ 4|float }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ none_value|string }}",
    "{{ 'a-b'|replace('-', '+') }} {{ [1,2,3]|reverse|list }} {{ 'abc'|reverse }} {{ '<&>'|e }} {{ 'x'|safe }} {{ 'one two  three'|wordcount }}",
    "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(1, blank=true) }}",
    "{{ '%s-%d'|format('a', 3) }} {{ '%s!' % 'hi' }} {{ '%05.1f|%r' % (3.14159, 'q') }}",
    "{{ d|tojson }} {{ s|tojson }} {{ '\\u2028\\x01\"\\\\/<>'|tojson }} {{ none_value|tojson }} {{ 1.0|tojson }} {{ [1,[2,3]]|tojson }}",
    "{{ d|tojson(indent=2) }} {{ d|tojson(sort_keys=true) }} {{ s|tojson(ensure_ascii=true) }} {{ d|tojson(separators=(',', ':')) }} {{ {}|tojson(indent=2) }} {{ []|tojson }}",
    "{{ '😀'|tojson(ensure_ascii=true) }} {{ nested|tojson(indent='\\t') }}",
    # tests
    "{{ 'x' is string }} {{ [1] is sequence }} {{ d is mapping }} {{ 'a' is iterable }} {{ 1 is number }} {{ f is float }} {{ n is integer }} {{ true is boolean }}",
    "{{ true is false }} {{ false is false }} {{ true is true }} {{ 1 is true }} {{ none_value is none }} {{ nothing is none }} {{ nothing is defined }} {{ nothing is undefined }}",
    "{{ n is odd }} {{ n is even }} {{ n is divisibleby 7 }} {{ n is divisibleby(2) }} {{ 'a' is in 'abc' }} {{ n is eq 7 }} {{ n is ne 7 }} {{ n is gt 3 }} {{ n is lt(3) }} {{ n is ge 7 }} {{ n is le 6 }}",
    "{{ 'abc' is lower }} {{ 'ABC' is upper }} {{ n is not none }} {{ n is not defined }} {{ range is callable }} {{ nothing is iterable }} {{ d is not mapping and true }}",
    # undefined
    "[{{ nothing }}][{{ nothing|length }}][{{ nothing|string }}][{{ nothing|trim }}][{{ nothing|join }}][{{ nothing|first }}][{{ nothing == nothing }}]",
    "{% for x in nothing %}a{% endfor %}b{{ nothing|list }}{{ nothing|items|list }}",
    # globals
    "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b='x') }} {{ namespace(a=1).a }}",
    "{{ strftime_now('%Y-%m-%d %H:%M %a %b %j') }}",
    # errors (the expected field holds the error)
    "{{ nothing.attr }}",
    "{{ d.missing.deeper }}",
    "{{ 'a' + 1 }}",
    "{{ nothing + 1 }}",
    "{{ raise_exception('custom failure') }}",
    "{{ none_value|tojson }}{{ nothing|tojson }}",
    "{% for x in n %}{% endfor %}",
    "{{ 1 / 0 }}",
    "{{ nothing() }}",
    "{{ [1,2].append(3) }}",
    "{% set x.y = 1 %}",
    "{{ n|nosuchfilter }}",
]


def render_jinja_cases():
    cases = []
    for src in JINJA_SNIPPETS:
        case = {"template": src}
        try:
            case["expected"] = ctu._compile_jinja_template(src).render(**JINJA_CONTEXT)
        except Exception as e:  # the C++ side only checks that it fails too
            case["error"] = f"{type(e).__name__}: {e}"
        cases.append(case)
    return cases


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

    jinja_cases = render_jinja_cases()
    with open(os.path.join(HERE, "jinja_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/reference/chat_templates/make_fixtures.py",
                   "transformers": transformers.__version__, "jinja2": jinja2.__version__,
                   "fixed_now": FIXED_NOW.strftime("%Y-%m-%d %H:%M:%S"),
                   "context": JINJA_CONTEXT, "cases": jinja_cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(jinja_cases)} jinja cases, {sum('error' in c for c in jinja_cases)} expected errors")


if __name__ == "__main__":
    main()
