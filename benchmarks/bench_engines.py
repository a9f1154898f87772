"""Engine benchmark: every available backend/precision on a fixed input, for the tiny default model and the
official-size architecture (random weights), 64x64 LQ -> 256x256 by default. Prints JSON (see `engines.bench`).

    .venv/bin/python benchmarks/bench_engines.py                      # both models, all backends, CPU
    .venv/bin/python benchmarks/bench_engines.py --models default --repeats 5 -o bench.json
    .venv/bin/python benchmarks/bench_engines.py --device cuda --compile

Same as `tadsr bench`. The official-size run takes minutes on a 2-core CPU (one-time ONNX export ~1 min, then
~7 s per fp32 call); it is kept out of the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tadsr_cli.engines.bench import dumps, run_bench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="default,official", help="comma list: default, official")
    ap.add_argument("--backends", default="torch,onnx,tensorrt")
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64, help="LQ tile size (output is 4x)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the bf16 fast path")
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    def split(text: str) -> list[str]:
        return [t.strip().lower() for t in text.split(",") if t.strip()]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = run_bench(split(args.models), device=args.device, size=args.size, batch=args.batch,
                       repeats=args.repeats, backends=split(args.backends), precisions=split(args.precisions),
                       compile_fast=args.compile, threads=args.threads, log=None if args.quiet else log)
    text = dumps(report)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
