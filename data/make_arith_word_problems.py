#!/usr/bin/env python3
"""Writes arith_word_problems.jsonl: 30 short arithmetic word problems with
integer answers, for `retort generate --prompts` (verifier: math).

Deterministic (fixed seed, no dependencies): rerun it to regenerate the file
byte for byte. Each line: {"id", "prompt", "answer"}.
"""
import json
import os
import random

TEMPLATES = [
    ("{n} has {a} apples and buys {b} more. How many apples does {n} have now?",
     lambda a, b: a + b),
    ("A shelf holds {a} books. {n} takes away {b} of them. How many books are left on the shelf?",
     lambda a, b: a - b),
    ("{n} packs {a} boxes with {b} pencils in each box. How many pencils is that in total?",
     lambda a, b: a * b),
    ("{n} shares {p} stickers equally among {b} friends. How many stickers does each friend get?",
     lambda a, b: a),  # p = a * b
    ("A bus carries {a} people. At the next stop {b} more get on. How many people are on the bus?",
     lambda a, b: a + b),
    ("{n} had {a} dollars and spent {b} dollars on lunch. How many dollars are left?",
     lambda a, b: a - b),
]
NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack"]
INSTRUCTION = "Answer with the final number in \\boxed{}.\n\n"


def main():
    rng = random.Random(20240605)
    out = []
    for i in range(30):
        template, answer_of = TEMPLATES[i % len(TEMPLATES)]
        a = rng.randint(3, 40)
        b = rng.randint(2, 12)
        if "- " in template or "away" in template or "spent" in template:
            a, b = max(a, b) + b, b
        name = NAMES[rng.randrange(len(NAMES))]
        text = template.format(n=name, a=a, b=b, p=a * b)
        out.append({"id": f"arith-{i:02d}", "prompt": INSTRUCTION + text,
                    "answer": str(answer_of(a, b))})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "arith_word_problems.jsonl")
    with open(path, "w") as f:
        for row in out:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
