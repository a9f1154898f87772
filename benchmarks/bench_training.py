"""Training throughput of each recipe stage (issue 21, item 1): iterations per hour and where the time goes (JSON).

Stages: the teacher (recipes/tadsr-tiny-x4-teacher-clean.yaml, from the shipped teacher) and the student
(recipes/tadsr-tiny-x4.yaml, teacher and init = the shipped models) with a cold teacher cache (targets computed)
and a warm one (targets read). Each stage runs a few dozen iterations through the library that `tadsr distill`
uses (`load_recipe` + `make_task` + `train`, `--set`-style overrides) into a temporary folder, once per precision
mode, the modes taking turns (`--rounds`), so that a busy machine slows them alike:

* ``fp32``: `amp: none`, targets inline in fp32 (what the recipes did before: today's baseline);
* ``bf16``: `amp: bf16`, channels_last off, targets in bf16 on the fastest engine (`targets.engine: auto`),
  one micro-batch ahead in a background thread;
* ``bf16-cl``: as bf16 with `channels_last: true`.

Per iteration (the first `--skip` left out: oneDNN/OpenVINO set-up, first image decodes) it reports wall and CPU
seconds of the phases of `tadsr_cli.train.timing` (data wait, targets, targets computed ahead, network step,
bookkeeping = EMA + loss reduction + logging; checkpoints are timed once and spread over the recipe's
`checkpoint.every`; validation, every 1000+ iterations, is left out). Iterations per hour are given twice:

* ``measured``: 3600 / wall seconds per iteration, as this run saw them (on a shared machine: other processes'
  turns included);
* ``quiet_2core``: an estimate for the same run alone on the two cores, from CPU seconds: the main thread, the
  background target thread and the DataLoader worker (its CPU per batch timed here, images decoded) share two
  cores: max(main, ahead + data, (main + ahead + data) / 2).

The student runs with the GAN term from the first iteration (`loss.gan_start=0`), as 900 of the recipe's 1000
iterations do. Data: only the train-hr folder (22 photos), so that the DataLoader worker's decoded-image cache is warm after the
first three batches, as it is in a real run after its first ~47 batches (372 photos: ~10 s of decoding per run,
reported as ``image_decode_s_once``). The crops, degradations and networks are the recipes'.

Also reported (item 3, "same results at equal iterations"): the PSNR of the bf16 teacher targets against the fp32
ones (the same crops: the cold runs' caches), the per-iteration losses of the modes side by side, and HFSD's score
difference (its gradient) from the bf16 teacher against fp32 (its loss value is a near-cancelling sum: compare g).

    OMP_NUM_THREADS=1 nice python benchmarks/bench_training.py [--iterations 24] [--student-iterations 12]
        [--rounds 2] [--skip 4] [--stages teacher,student] [--modes fp32,bf16,bf16-cl] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
TEACHER_RECIPE = ROOT / "recipes" / "tadsr-tiny-x4-teacher-clean.yaml"
STUDENT_RECIPE = ROOT / "recipes" / "tadsr-tiny-x4.yaml"
DATA = "../shared/data/train-hr"

MODES: dict[str, list[str]] = {
    "fp32": ["amp=none", "channels_last=false", "targets.precision=fp32", "targets.ahead=false"],
    "bf16": ["amp=bf16", "channels_last=false", "targets.precision=bf16", "targets.ahead=true"],
    "bf16-cl": ["amp=bf16", "channels_last=true", "targets.precision=bf16", "targets.ahead=true"],
}


def _overrides(stage: str, mode: str, iterations: int, cache: Path | None) -> list[str]:
    common = [f"iterations={iterations}", f"data.hr=[{DATA}]", "validation.n_images=0", "log.every=1",
              "checkpoint.every=100000", *MODES[mode]]
    if stage == "teacher":
        return [*common, "model.init=tadsr-tiny-x4-teacher"]  # a registry name (issue 21: `model.init`)
    # the GAN term from the first iteration: the recipe's 900 of 1000 iterations have it (gan_start 100)
    return [*common, "model.teacher=tadsr-tiny-x4-teacher", "model.init=tadsr-tiny-x4", f"teacher_cache={cache}",
            "loss.gan_start=0"]


def _data_cpu_per_batch(recipe: Any, batches: int = 4) -> tuple[float, float]:
    """CPU seconds per batch of the dataset items once their images are decoded, and the decode time per image."""
    from tadsr_cli.train.data_stream import build_train_dataset

    ds = build_train_dataset(recipe, 4, recipe.batch, 1)
    n = len(ds.files)
    c0 = time.process_time()
    for i in range(n):  # one item per image: decodes each once (the first pass of a run)
        ds[i]
    first = (time.process_time() - c0) / n
    c0 = time.process_time()
    for i in range(n, n + batches * recipe.batch):
        ds[i]
    per_item = (time.process_time() - c0) / (batches * recipe.batch)
    return per_item * recipe.batch, max(first - per_item, 0.0)


def _run(stage: str, mode: str, iterations: int, skip: int, work: Path, cache: Path | None) -> dict[str, Any]:
    from tadsr_cli.train.distributed import setup_distributed
    from tadsr_cli.train.loop import train
    from tadsr_cli.train.recipe import load_recipe
    from tadsr_cli.train.run import make_task

    recipe = load_recipe(TEACHER_RECIPE if stage == "teacher" else STUDENT_RECIPE,
                         _overrides(stage, mode, iterations, cache))
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    env = setup_distributed(recipe.device)
    console = Console(file=io.StringIO(), width=200)
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{stage}-{mode}-"))
    shutil.rmtree(out)
    w0 = time.perf_counter()
    task = make_task(recipe, env, console)
    setup_s = time.perf_counter() - w0
    result = train(task, out, console=console, progress=False, keep_loss_history=True)
    phases = task.clock.summary(skip=skip)
    wall = phases["iteration"]["wall_s"]
    # one checkpoint, spread over the shipped recipe's interval
    ckpt_every = {"teacher": 250, "student": 100}[stage]
    c0 = time.perf_counter()
    torch.save(task.state_dict(), out / "bench-ckpt.pt")
    ckpt_s = time.perf_counter() - c0
    info: dict[str, Any] = {
        "amp": task.amp.describe(),
        "setup_s": round(setup_s, 2),
        "wall_s_per_it": wall,
        "phases": phases,
        "checkpoint_s_per_it": ckpt_s / ckpt_every,
        "losses": [{k: v for k, v in r.items() if k not in ("lr", "it_per_s", "elapsed_s")} for r in result.losses],
    }
    infer = getattr(task, "infer", None)
    if infer is not None:
        info["targets_engine"] = infer.name
        info["ahead"] = bool(task.ahead)
        info["cache"] = {"hits": task.cache.hits, "misses": task.cache.misses} if task.cache else None
    shutil.rmtree(out, ignore_errors=True)
    return info


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _aggregate(runs: list[dict[str, Any]], data_cpu: float) -> dict[str, Any]:
    """Means over the rounds; per-iteration seconds, split, and iterations per hour."""
    phases: dict[str, dict[str, float]] = {}
    for name in runs[0]["phases"]:  # (`iteration`: the whole of each)
        phases[name] = {k: round(_mean([r["phases"][name][k] for r in runs]), 4) for k in ("wall_s", "cpu_s")}
    ckpt = _mean([r["checkpoint_s_per_it"] for r in runs])
    phases["bookkeeping"]["wall_s"] = round(phases["bookkeeping"]["wall_s"] + ckpt, 4)
    phases["bookkeeping"]["cpu_s"] = round(phases["bookkeeping"]["cpu_s"] + ckpt, 4)
    wall = _mean([r["wall_s_per_it"] for r in runs]) + ckpt
    main_cpu = phases["iteration"]["cpu_s"] + ckpt
    ahead = phases["targets_ahead"]["cpu_s"]
    quiet = max(main_cpu, ahead + data_cpu, (main_cpu + ahead + data_cpu) / 2)
    out = {
        "amp": runs[0]["amp"],
        "wall_s_per_it": round(wall, 4),
        "main_thread_cpu_s_per_it": round(main_cpu, 4),
        "ahead_thread_cpu_s_per_it": round(ahead, 4),
        "data_worker_cpu_s_per_it": round(data_cpu, 4),
        "quiet_2core_s_per_it": round(quiet, 4),
        "it_per_hour": {"measured": round(3600 / wall), "quiet_2core": round(3600 / quiet)},
        "split_s_per_it": {
            "network_step": phases["step"],
            "teacher_targets": {"critical_path": phases["targets"], "computed_ahead": phases["targets_ahead"]},
            "data": {"wait": phases["data"], "worker_cpu": data_cpu},
            "bookkeeping": phases["bookkeeping"],
        },
        "runs": len(runs),
    }
    for key in ("targets_engine", "ahead", "cache"):
        if key in runs[0]:
            out[key] = runs[0][key] if key != "cache" else [r["cache"] for r in runs]
    return out


def _loss_agreement(a: list[dict[str, float]], b: list[dict[str, float]], keys: list[str]) -> dict[str, Any]:
    """Per-iteration losses of two runs over the same batches: the mean of each and the largest relative gap."""
    out: dict[str, Any] = {}
    for k in keys:
        xa = np.array([r[k] for r in a if k in r], dtype=np.float64)
        xb = np.array([r[k] for r in b if k in r], dtype=np.float64)
        n = min(len(xa), len(xb))
        if n == 0:
            continue
        xa, xb = xa[:n], xb[:n]
        rel = np.abs(xa - xb) / np.maximum(np.abs(xa), 1e-12)
        out[k] = {"mean_fp32": float(xa.mean()), "mean_other": float(xb.mean()),
                  "max_rel_gap": float(rel.max()), "median_rel_gap": float(np.median(rel))}
    return out


def _target_psnr(cache_a: Path, cache_b: Path) -> dict[str, Any]:
    """PSNR (peak-to-peak 2: latents of [-1, 1] images) of the targets in `cache_b` against the same crops' in
    `cache_a`."""
    from safetensors.torch import load_file

    files_a = {p.name: p for p in cache_a.rglob("*.safetensors")}
    files_b = {p.name: p for p in cache_b.rglob("*.safetensors")}
    common = sorted(set(files_a) & set(files_b))
    if not common:
        return {"crops": 0}
    mse = [float(((load_file(str(files_a[n]))["x"] - load_file(str(files_b[n]))["x"]) ** 2).mean()) for n in common]
    psnr = [10 * math.log10(4.0 / m) if m > 0 else math.inf for m in mse]
    return {"crops": len(common), "psnr_db_mean_mse": round(10 * math.log10(4.0 / _mean(mse)), 2),
            "psnr_db_min": round(min(psnr), 2)}


def _hfsd_agreement(work: Path) -> dict[str, Any]:
    """HFSD's score difference g (what its gradient is) from the bf16 teacher engine against fp32, on one batch of
    the student recipe: its loss value mean(g * x_s) is a near-cancelling sum, so compare g itself."""
    from torch.utils.data import default_collate

    from tadsr_cli.train.distributed import setup_distributed
    from tadsr_cli.train.losses import hfsd_gradient
    from tadsr_cli.train.randomness import step_generator
    from tadsr_cli.train.recipe import load_recipe
    from tadsr_cli.train.run import make_task
    from tadsr_cli.train.teacher_targets import TeacherInference, choose_engine

    recipe = load_recipe(STUDENT_RECIPE, [*_overrides("student", "fp32", 1, work / "cache-hfsd"), "teacher_cache=null"])
    task: Any = make_task(recipe, setup_distributed("cpu"), Console(file=io.StringIO()))
    ds = task.build_train_dataset()
    batch = default_collate([ds[i] for i in range(recipe.batch)])
    x_tch = task.targets_for(dict(batch))[0]
    p = task._prepare(dict(batch), step_generator(recipe.seed, 0, 0), x_tch)
    with torch.no_grad():
        x_s = task._student(p)
    bf16 = load_recipe(STUDENT_RECIPE, _overrides("student", "bf16", 1, None))
    amp = type(task.amp)(bf16.amp, task.device, False)
    engine = choose_engine(bf16.targets.engine, bf16.targets.precision, amp)
    other = TeacherInference(task.teacher, amp, engine)
    out: dict[str, Any] = {"engine": engine}
    for t in recipe.loss.hfsd_timesteps:
        th = torch.full((recipe.batch,), t, dtype=torch.long)
        gs = [hfsd_gradient(x_s, x_tch, p["y"], th, p["n_h"],
                            lambda x, tt, e=e: e.predict_x0(x, p["y"], tt, p["lq"]), task.teacher.schedule)
              for e in (task.infer, other)]
        cos = torch.nn.functional.cosine_similarity(gs[0].flatten(), gs[1].flatten(), dim=0).item()
        out[f"t'={t}"] = {"cosine": round(cos, 5),
                          "relative_error": round(((gs[1] - gs[0]).norm() / gs[0].norm()).item(), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=24, help="teacher iterations per run")
    parser.add_argument("--student-iterations", type=int, default=12, help="student iterations per run")
    parser.add_argument("--skip", type=int, default=4, help="first iterations of each run left out of the means")
    parser.add_argument("--rounds", type=int, default=2, help="times each mode runs (the modes take turns)")
    parser.add_argument("--stages", default="teacher,student")
    parser.add_argument("--modes", default="fp32,bf16,bf16-cl")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    from tadsr_cli.pipeline.settings import cpu_has_fast_bf16
    from tadsr_cli.train.recipe import load_recipe

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    result: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_fast_bf16(),
        "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
        "torch": torch.__version__,
        "load_average_start": list(np.round(__import__("os").getloadavg(), 2)),
        "settings": {"iterations": args.iterations, "student_iterations": args.student_iterations,
                     "skip": args.skip, "rounds": args.rounds, "data": DATA},
        "stages": {},
    }
    try:
        data_recipe = load_recipe(TEACHER_RECIPE, _overrides("teacher", "fp32", 1, None))
        torch.set_num_threads(data_recipe.threads or 1)
        data_cpu, decode_s = _data_cpu_per_batch(data_recipe)
        result["image_decode_s_once"] = {"per_image": round(decode_s, 4),
                                         "372_photos_of_the_recipes": round(decode_s * 372, 1)}
        if "teacher" in stages:
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            for _ in range(args.rounds):
                for mode in modes:
                    runs[mode].append(_run("teacher", mode, args.iterations, args.skip, work, None))
            stage = {m: _aggregate(r, data_cpu) for m, r in runs.items()}
            for m in modes:
                if m != "fp32" and "fp32" in runs:
                    stage[m]["losses_vs_fp32"] = _loss_agreement(runs["fp32"][0]["losses"], runs[m][0]["losses"],
                                                                 ["loss"])
            result["stages"]["teacher"] = stage
        if "student" in stages:
            cold: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            warm: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            caches: dict[str, Path] = {}
            for rnd in range(args.rounds):
                for mode in modes:
                    cache = work / f"cache-{mode}-{rnd}"
                    caches.setdefault(mode, cache)
                    cold[mode].append(_run("student", mode, args.student_iterations, args.skip, work, cache))
                    warm[mode].append(_run("student", mode, args.student_iterations, args.skip, work, cache))
            keys = ["g_total", "reg", "hfsd", "gan_g", "d_loss"]
            for name, runs in (("student_cold_cache", cold), ("student_warm_cache", warm)):
                stage = {m: _aggregate(r, data_cpu) for m, r in runs.items()}
                for m in modes:
                    if m != "fp32" and "fp32" in runs:
                        stage[m]["losses_vs_fp32"] = _loss_agreement(runs["fp32"][0]["losses"],
                                                                     runs[m][0]["losses"], keys)
                result["stages"][name] = stage
            if "fp32" in caches:
                result["targets_psnr_vs_fp32"] = {m: _target_psnr(caches["fp32"], caches[m])
                                                  for m in modes if m != "fp32"}
                result["hfsd_gradient_vs_fp32"] = _hfsd_agreement(work)
        # ratios against today's fp32, per stage
        ratios: dict[str, Any] = {}
        for name, stage in result["stages"].items():
            if "fp32" not in stage:
                continue
            base = stage["fp32"]
            ratios[name] = {m: {"measured": round(base["wall_s_per_it"] / s["wall_s_per_it"], 2),
                                "quiet_2core": round(base["quiet_2core_s_per_it"] / s["quiet_2core_s_per_it"], 2),
                                "main_thread_cpu": round(base["main_thread_cpu_s_per_it"]
                                                         / s["main_thread_cpu_s_per_it"], 2)}
                            for m, s in stage.items() if m != "fp32"}
        cold_s, warm_s = result["stages"].get("student_cold_cache"), result["stages"].get("student_warm_cache")
        if cold_s and warm_s and "fp32" in cold_s:
            # a fresh run of the recipe (`crop_reuse: 2`): each crop's first pass computes its targets, the second
            # reads them, so half of the iterations are cold and half warm
            def mix(m: str, key: str) -> float:
                return (cold_s[m][key] + warm_s[m][key]) / 2

            ratios["student_recipe_crop_reuse_2"] = {
                m: {"measured": round(mix("fp32", "wall_s_per_it") / mix(m, "wall_s_per_it"), 2),
                    "quiet_2core": round(mix("fp32", "quiet_2core_s_per_it") / mix(m, "quiet_2core_s_per_it"), 2),
                    "it_per_hour_quiet_2core": round(3600 / mix(m, "quiet_2core_s_per_it"))}
                for m in cold_s}
        result["speedup_vs_fp32"] = ratios
        result["load_average_end"] = list(np.round(__import__("os").getloadavg(), 2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for stage in result["stages"].values():  # the per-iteration losses are long: keep them out of the print-out
        for s in stage.values():
            s.pop("losses", None)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
