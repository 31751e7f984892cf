#!/usr/bin/env python3
"""Runs retort's benchmark programs and writes one JSON document.

Every *_bench executable in <build>/benchmarks (or the ones named with
--program) runs with --threads=N --benchmark_format=json; the output is

  {"threads": N, "programs": {"roofline_bench": <Google Benchmark JSON>, ...}}

Usage: benchmarks/run_benchmarks.py --build build [--threads 2] [--out results.json]
       [--program roofline_bench ...] [--smoke] [-- extra benchmark flags]
Only the Python standard library is needed.
"""
import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="CMake build directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--program", action="append", help="benchmark program name (default: all *_bench)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the programs run")
    ap.add_argument("--out", help="output file (default: stdout)")
    ap.add_argument("extra", nargs="*", help="flags passed to every program (after --)")
    args = ap.parse_args()

    bench_dir = os.path.join(args.build, "benchmarks")
    names = args.program or sorted(
        f for f in os.listdir(bench_dir)
        if f.endswith("_bench") and os.access(os.path.join(bench_dir, f), os.X_OK))
    if not names:
        sys.exit(f"no *_bench programs in {bench_dir}")
    result = {"threads": args.threads, "programs": {}}
    for name in names:
        cmd = [os.path.join(bench_dir, name), f"--threads={args.threads}", "--benchmark_format=json"]
        if args.smoke:
            cmd += ["--smoke", "--benchmark_min_time=0.01"]
        cmd += args.extra
        print("running", " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            sys.exit(f"{name} exited with {proc.returncode}")
        try:
            result["programs"][name] = json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            sys.exit(f"{name} did not print JSON: {e}")
    text = json.dumps(result, indent=1)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.out)
    else:
        print(text)


if __name__ == "__main__":
    main()
