#!/usr/bin/env python3
"""Verifiable multi-digit addition problems and their written reasoning traces.

The bundled arithmetic teacher (models/arith-teacher) learns these, and the demo
shows that a small student learns them far better from the teacher's traces
than from the answers alone. Python standard library only; every output is a
pure function of the arguments (--seed included).

A problem is "What is A + B?" with A and B of exactly --digits digits
(--operands numbers in all; 2 by default). The trace, written inside
<think>...</think>, adds column by column from the units, the way one does it on paper, one
fixed-width line per column:

    3+5+0=08, _4821+_1947, c=0, r=8_____    <- digits of the column, carry in,
    1+7+0=08, __482+__194, c=0, r=88____       their sum; operands shifted right
    2+4+0=06, ___48+___19, c=0, r=688___       past the used digits; carry out;
    8+9+0=17, ____4+____1, c=1, r=7688__       result so far, newest digit first
    4+1+1=06, _____+_____, c=0, r=67688_
    0+0+0=00, _____+_____, c=0, r=067688       (the last carry)

(for 48213 + 19475 = 67688). Every line has the same length and every field
the same column, so each character of a line is either a copy of the character
one line up (at a fixed distance) or a sum of three characters at fixed
distances: a small transformer learns this quickly, while writing the answer
directly needs the whole carry chain at once. The answer is the last r= without
its leading zero.

Held-out problems are never trained on, by construction: a problem belongs to
the held-out pool exactly when a hash of "A+B" falls in one bucket out of
HELDOUT_BUCKETS, whatever the seed; every training set is drawn from the other
buckets.

Usage:
  problems.py --out DIR [--seed S] [--train N] [--heldout M] [--sft K]
writes
  DIR/heldout.jsonl        M held-out prompts {"id","prompt","answer"}
  DIR/train_prompts.jsonl  N training prompts {"id","prompt","answer"} (what
                           the teacher answers in the demo)
  DIR/teacher_sft.jsonl    K chats with the reasoning (teacher training):
                           {"id","messages":[user, assistant{content,
                           reasoning_content}]}
No problem appears twice across the three files: the SFT problems are the
teacher's own training set, the train prompts are new questions the teacher
later writes traces for (the students' data), the held-out ones score both.
"""

import argparse
import hashlib
import json
import os
import random
import sys

HELDOUT_BUCKETS = 16  # one bucket of 16 is held out


def bucket(nums):
    """The hash bucket of problem nums[0] + nums[1] + ... (0 = held out)."""
    digest = hashlib.sha256("+".join(str(n) for n in nums).encode()).digest()
    return int.from_bytes(digest[:4], "little") % HELDOUT_BUCKETS


def is_heldout(nums):
    return bucket(nums) == 0


def prompt_text(nums):
    return "What is " + " + ".join(str(n) for n in nums) + "?"


PAD = "_"


def trace_lines(nums):
    """The column-by-column addition of `nums` (equal lengths), one line per
    column plus one for the last carry."""
    width = len(str(nums[0]))
    ops = [str(n) for n in nums]
    assert all(len(o) == width for o in ops), nums
    carry = 0
    result = PAD * (width + 1)
    lines = []
    for _ in range(width + 1):
        digits = [int(o[-1]) if o[-1] != PAD else 0 for o in ops]
        total = sum(digits) + carry
        ops = [PAD + o[:-1] for o in ops]
        terms = "+".join(str(d) for d in digits)
        carry_in, carry = carry, total // 10
        result = str(total % 10) + result[:-1]
        lines.append(f"{terms}+{carry_in}={total:02d}, {'+'.join(ops)}, c={carry}, r={result}")
    assert carry == 0 and int(result) == sum(nums), (nums, result)
    return lines


def reasoning(nums):
    return "\n".join(trace_lines(nums))


def answer(nums):
    return str(sum(nums))


def draw(rng, count, digits, operands, want_heldout, taken):
    """`count` distinct problems from the held-out pool or the training pool,
    none in `taken` (which is updated)."""
    out = []
    while len(out) < count:
        nums = tuple(rng.randint(10 ** (digits - 1), 10**digits - 1) for _ in range(operands))
        if is_heldout(nums) != want_heldout or nums in taken:
            continue
        taken.add(nums)
        out.append(nums)
    return out


def prompt_record(prefix, i, nums):
    return {"id": f"{prefix}-{i:05d}", "prompt": prompt_text(nums), "answer": answer(nums)}


def sft_record(i, nums):
    return {
        "id": f"sft-{i:06d}",
        "messages": [
            {"role": "user", "content": prompt_text(nums)},
            {"role": "assistant", "content": answer(nums), "reasoning_content": reasoning(nums)},
        ],
    }


def write_jsonl(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=2000, help="training prompts")
    p.add_argument("--heldout", type=int, default=200, help="held-out prompts")
    p.add_argument("--sft", type=int, default=0, help="teacher SFT chats with reasoning")
    p.add_argument("--digits", type=int, default=5, help="digits of every operand")
    p.add_argument("--operands", type=int, default=2, help="numbers added")
    p.add_argument("--print-example", action="store_true", help="print one trace and exit")
    args = p.parse_args(argv)
    if args.digits < 1 or args.operands < 2:
        p.error("need --digits >= 1 and --operands >= 2")
    if args.print_example:
        nums = draw(random.Random(args.seed), 1, args.digits, args.operands, False, set())[0]
        print(prompt_text(nums))
        print(reasoning(nums))
        return 0
    os.makedirs(args.out, exist_ok=True)
    # Separate generators per set, so changing one size leaves the others as they are.
    shape = (args.digits, args.operands)
    taken = set()
    heldout = draw(random.Random(f"heldout:{args.seed}"), args.heldout, *shape, True, taken)
    train = draw(random.Random(f"train:{args.seed}"), args.train, *shape, False, taken)
    sft = draw(random.Random(f"sft:{args.seed}"), args.sft, *shape, False, taken)
    write_jsonl(os.path.join(args.out, "heldout.jsonl"),
                [prompt_record("heldout", i, nums) for i, nums in enumerate(heldout)])
    write_jsonl(os.path.join(args.out, "train_prompts.jsonl"),
                [prompt_record("train", i, nums) for i, nums in enumerate(train)])
    if args.sft:
        write_jsonl(os.path.join(args.out, "teacher_sft.jsonl"),
                    [sft_record(i, nums) for i, nums in enumerate(sft)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
