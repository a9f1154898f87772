"""Speed of the embedded student (1 step) vs a teacher at T steps, 64x64 LQ -> 256x256, in one run (prints JSON).

    python benchmarks/bench_default_model.py [--teacher tadsr_cli/weights/tadsr-tiny-x4-teacher.safetensors] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tadsr_cli.models.model_cache import resolve_model


def seconds_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, default=Path("tadsr_cli/weights/tadsr-tiny-x4-teacher.safetensors"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    student = resolve_model(None)
    noise = torch.randn(1, student.latent_channels, 64, 64, generator=gen)
    result = {"input": "1x3x64x64 -> 256x256", "threads": torch.get_num_threads(), "cpu": platform.processor()}
    with torch.inference_mode():
        result["student_1_step_s"] = seconds_per_call(lambda: student.one_step(lq, noise), args.repeats)
        if args.teacher.is_file():
            teacher = resolve_model(args.teacher)
            steps = teacher.config.schedule.steps
            result["teacher_steps"] = steps
            result["teacher_1_step_s"] = seconds_per_call(lambda: teacher.one_step(lq, noise), args.repeats)
            result["teacher_T_steps_s"] = seconds_per_call(lambda: teacher.sample(lq, noise), max(2, args.repeats // 3))
            result["speedup_student_vs_teacher_T"] = result["teacher_T_steps_s"] / result["student_1_step_s"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
