"""The fast training paths of issue 21: bf16 autocast and channels_last for the network step, the teacher's targets
on a bf16 engine computed one micro-batch ahead, `model.init` by registry name, the time split per phase.

Same results: the fp32 path computes exactly what the teacher itself computes (and what earlier versions logged),
the background targets change nothing, and the bf16 paths stay within bf16 rounding of fp32 at equal iterations.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from tadsr_cli.base.errors import ModelNotFoundError, RecipeError
from tadsr_cli.train.distributed import setup_distributed
from tadsr_cli.train.precision import Amp
from tadsr_cli.train.recipe import load_recipe
from tadsr_cli.train.run import make_task, run_recipe
from tadsr_cli.train.teacher_targets import TeacherInference, choose_engine

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TEACHER = ROOT / "recipes" / "smoke-teacher.yaml"
SMOKE_TADSR = ROOT / "recipes" / "smoke-tadsr.yaml"
CPU = torch.device("cpu")


def _openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(1)
    for i in range(4):
        base = rng.uniform(0, 255, size=(6, 6, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(base).resize((96, 96), Image.BICUBIC)).copy()
        img[rng.integers(0, 80):, rng.integers(0, 80)::7] = 255
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


def _overrides(hr: Path, *extra: str) -> list[str]:
    return [f"data.hr={hr}", "data.exclude=[]", "validation.n_images=0", "log.every=1", "data.length=8",
            "data.fixed_crops=true", *extra]


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _losses(recipe_file: Path, hr: Path, tmp: Path, name: str, *extra: str) -> list[dict[str, float]]:
    recipe = load_recipe(recipe_file, _overrides(hr, *extra))
    result = run_recipe(recipe, tmp / name, console=_quiet(), progress=False, keep_loss_history=True)
    return result.losses


def _close(a: list[dict[str, float]], b: list[dict[str, float]], keys: list[str], rel: float) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for k in keys:
            assert rb[k] == pytest.approx(ra[k], rel=rel, abs=1e-6), (k, ra["step"], ra[k], rb[k])


# ---------------------------------------------------------------------------------------------------------------
# Recipe keys and their resolution
# ---------------------------------------------------------------------------------------------------------------
def test_new_recipe_keys_parse_and_default(hr_folder):
    r = load_recipe(SMOKE_TADSR, _overrides(hr_folder))
    assert (r.channels_last, r.targets.engine, r.targets.precision, r.targets.ahead) == ("auto", "auto", "auto", True)
    assert "channels_last" not in r.to_dict() and "targets" not in r.to_dict()  # old checkpoints resume silently
    r = load_recipe(SMOKE_TADSR, _overrides(hr_folder, "channels_last=true", "targets.engine=torch",
                                            "targets.precision=bf16", "targets.ahead=false"))
    assert (r.channels_last, r.targets.engine, r.targets.precision, r.targets.ahead) == (True, "torch", "bf16", False)
    with pytest.raises(RecipeError, match="channels_last"):
        load_recipe(SMOKE_TADSR, _overrides(hr_folder, "channels_last=sometimes"))
    with pytest.raises(RecipeError, match="targets.engine"):
        load_recipe(SMOKE_TADSR, _overrides(hr_folder, "targets.engine=tensorrt"))
    with pytest.raises(RecipeError, match="unknown key"):
        load_recipe(SMOKE_TADSR, _overrides(hr_folder, "targets.fast=true"))


def test_amp_auto_and_channels_last_auto(monkeypatch):
    import tadsr_cli.train.precision as precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: False)
    amp = Amp("auto", CPU, "auto")
    assert (amp.mode, amp.channels_last) == ("bf16", False)  # no AMX: NHWC measured no faster
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: True)
    assert Amp("auto", CPU, "auto").channels_last and not Amp("none", CPU, "auto").channels_last
    assert Amp("bf16", CPU, False).channels_last is False and Amp("none", CPU, True).channels_last is True
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert Amp("auto", CPU, "auto").mode == "none"  # emulated bf16 is slower than fp32: stay in fp32


def test_target_engine_choice(monkeypatch):
    import tadsr_cli.train.teacher_targets as tt

    fp32, bf16 = Amp("none", CPU), Amp("bf16", CPU)
    assert choose_engine("auto", "auto", fp32) == "torch-fp32"  # the reference numbers stay the default in fp32
    assert choose_engine("auto", "fp32", bf16) == "torch-fp32"
    monkeypatch.setattr(tt, "cpu_has_fast_bf16", lambda: True)
    assert choose_engine("torch", "auto", bf16) == "torch-bf16"
    monkeypatch.setattr(tt, "_openvino_available", lambda: True)
    monkeypatch.setattr(tt, "_openvino_bf16", lambda: True)
    assert choose_engine("auto", "auto", bf16) == "openvino-bf16"
    monkeypatch.setattr(tt, "_openvino_bf16", lambda: False)
    assert choose_engine("auto", "bf16", bf16) == "torch-bf16"
    with pytest.raises(RecipeError, match="native bf16"):
        choose_engine("openvino", "bf16", bf16)
    # a GPU keeps the run's autocast for its targets, as before (and its cache keys)
    from types import SimpleNamespace

    cuda = torch.device("cuda")
    assert choose_engine("auto", "auto", SimpleNamespace(device=cuda, mode="fp16")) == "torch-amp"
    assert choose_engine("auto", "auto", SimpleNamespace(device=cuda, mode="none")) == "torch-fp32"
    assert choose_engine("torch", "fp32", SimpleNamespace(device=cuda, mode="bf16")) == "torch-fp32"
    with pytest.raises(RecipeError, match="CPU"):
        choose_engine("openvino", "auto", SimpleNamespace(device=cuda, mode="bf16"))


# ---------------------------------------------------------------------------------------------------------------
# model.init by registry name (as model.teacher)
# ---------------------------------------------------------------------------------------------------------------
def test_model_init_accepts_a_registry_name(hr_folder):
    from tadsr_cli.models.checkpoints import read_state_dict
    from tadsr_cli.models.model_cache import resolve_model_path
    from tadsr_cli.train.task import resolve_weights

    shipped_teacher = resolve_model_path("tadsr-tiny-x4-teacher")
    assert resolve_weights("tadsr-tiny-x4-teacher") == shipped_teacher
    assert resolve_weights(str(shipped_teacher)) == shipped_teacher
    env = setup_distributed("cpu")
    recipe = load_recipe(ROOT / "recipes" / "tadsr-tiny-x4-teacher-clean.yaml", [
        f"data.hr={hr_folder}", "data.exclude=[]", "validation.n_images=0", "model.init=tadsr-tiny-x4-teacher"])
    task = make_task(recipe, env, _quiet())
    want = read_state_dict(shipped_teacher)
    for key, value in task.model.denoiser.state_dict().items():
        if f"denoiser.{key}" in want:  # (buffers recomputed from the config are not stored)
            assert torch.equal(value, want[f"denoiser.{key}"]), key
    recipe = load_recipe(ROOT / "recipes" / "tadsr-tiny-x4.yaml", [
        f"data.hr={hr_folder}", "data.exclude=[]", "validation.n_images=0", "teacher_cache=null",
        "model.teacher=tadsr-tiny-x4-teacher", "model.init=tadsr-tiny-x4"])
    task = make_task(recipe, env, _quiet())
    want = read_state_dict(resolve_model_path("tadsr-tiny-x4"))
    for key, value in task.student.denoiser.state_dict().items():
        if f"denoiser.{key}" in want:  # (buffers recomputed from the config are not stored)
            assert torch.equal(value, want[f"denoiser.{key}"]), key
    recipe = load_recipe(SMOKE_TEACHER, _overrides(hr_folder, "model.init=no-such-model"))
    with pytest.raises(ModelNotFoundError, match="neither a file nor a known model"):
        make_task(recipe, env, _quiet())


# ---------------------------------------------------------------------------------------------------------------
# The fp32 path: the reference numbers, ahead or inline
# ---------------------------------------------------------------------------------------------------------------
def test_fp32_targets_and_hfsd_predictions_are_the_teachers_own(hr_folder):
    recipe = load_recipe(SMOKE_TADSR, _overrides(hr_folder))
    task = make_task(recipe, setup_distributed("cpu"), _quiet())
    assert task.infer.name == "torch-fp32" and task.infer.reference and not task.amp.channels_last
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    eps = torch.randn(2, 48, 16, 16, generator=g)
    teacher = task.teacher
    with torch.no_grad():
        y = teacher.lq_latent(lq)
        assert torch.equal(task.infer.sample(lq, eps, y), teacher.sample_latent(lq, eps, "deterministic", y=y))
        t = torch.tensor([0, 2])
        x = teacher.prior(y, eps)
        assert torch.equal(task.infer.predict_x0(x, y, t, lq), teacher.predict_x0(x, y, t, lq))


def test_targets_ahead_change_nothing(tmp_path, hr_folder):
    common = ("iterations=4", "loss.gan=0.02", f"teacher_cache={tmp_path / 'cache'}")
    inline = _losses(SMOKE_TADSR, hr_folder, tmp_path, "inline", *common, "targets.ahead=false")
    recipe = load_recipe(SMOKE_TADSR, _overrides(hr_folder, *common[:2], f"teacher_cache={tmp_path / 'cache2'}"))
    task = make_task(recipe, setup_distributed("cpu"), _quiet())
    from tadsr_cli.train.loop import train

    result = train(task, tmp_path / "ahead", console=_quiet(), progress=False, keep_loss_history=True)
    assert task.ahead
    keys = ["g_total", "reg", "hfsd", "gan_g", "d_loss", "d_real", "d_fake"]
    assert [{k: r[k] for k in keys} for r in inline] == [{k: r[k] for k in keys} for r in result.losses]
    # 4 iterations of batch 4 over 8 fixed crops: 8 computed, 8 read; no batch past the last iteration
    assert (task.cache.misses, task.cache.hits) == (8, 8)
    summary = task.clock.summary()
    assert summary["targets_ahead"]["cpu_s"] > 0 and summary["step"]["wall_s"] > 0
    assert len(task.clock.history) == 4


# ---------------------------------------------------------------------------------------------------------------
# bf16 (+ channels_last): the same results within bf16 rounding at equal iterations
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
def test_teacher_step_bf16_matches_fp32(tmp_path, hr_folder, cl):
    fp32 = _losses(SMOKE_TEACHER, hr_folder, tmp_path, "fp32", "iterations=3")
    bf16 = _losses(SMOKE_TEACHER, hr_folder, tmp_path, "bf16", "iterations=3", "amp=bf16", f"channels_last={cl}")
    _close(fp32, bf16, ["loss"], rel=2e-2)


def test_channels_last_fp32_step_matches_nchw(tmp_path, hr_folder):
    a = _losses(SMOKE_TEACHER, hr_folder, tmp_path, "nchw", "iterations=2")
    b = _losses(SMOKE_TEACHER, hr_folder, tmp_path, "nhwc", "iterations=2", "channels_last=true")
    _close(a, b, ["loss"], rel=1e-4)  # the same math in another memory layout


@pytest.mark.parametrize("engine, cl", [("torch", False), ("torch", True), ("auto", False)],
                         ids=["torch-bf16", "torch-bf16-channels_last", "auto"])
def test_distill_step_bf16_matches_fp32(tmp_path, hr_folder, engine, cl):
    from tadsr_cli.pipeline.settings import cpu_has_fast_bf16

    if not cpu_has_fast_bf16():
        pytest.skip("no native bf16 on this CPU (the bf16 target engines refuse to emulate it)")
    common = ("iterations=2", "loss.gan_start=0")
    fp32 = _losses(SMOKE_TADSR, hr_folder, tmp_path, "fp32", *common)
    bf16 = _losses(SMOKE_TADSR, hr_folder, tmp_path, "bf16", *common, "amp=bf16", f"channels_last={cl}",
                   f"targets.engine={engine}")
    # iteration 1 (the same weights): bf16 rounding only; iteration 2 follows one update of lr 1e-3 (G and D)
    _close(fp32[:1], bf16[:1], ["reg", "d_loss", "gan_g", "d_real", "d_fake"], rel=2e-2)
    _close(fp32[1:], bf16[1:], ["reg", "d_loss", "gan_g"], rel=0.1)
    # HFSD's score difference is a difference of two teacher predictions divided by kappa sqrt(eta_t) (small at
    # t' = 0): in bf16 it moves by a few percent (cosine to fp32's > 0.999 on the shipped teacher)
    _close(fp32, bf16, ["hfsd"], rel=0.25)


def test_bf16_targets_stay_close_to_fp32():
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR
    from tadsr_cli.pipeline.settings import cpu_has_fast_bf16

    torch.manual_seed(0)
    teacher = DiffusionSR(tiny_test_config("residual")).eval()
    for p in teacher.denoiser.parameters():
        p.data.add_(torch.randn_like(p) * 0.02)
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    eps = torch.randn(2, teacher.latent_channels, 16, 16, generator=g)
    y = teacher.lq_latent(lq)
    ref = TeacherInference(teacher, Amp("none", CPU)).sample(lq, eps, y)
    engines = ["torch-amp"] + (["torch-bf16"] if cpu_has_fast_bf16() else [])
    if _openvino():  # (a conversion takes seconds: one of the two)
        engines += ["openvino-bf16" if cpu_has_fast_bf16() else "openvino-fp32"]
    for name in engines:
        out = TeacherInference(teacher, Amp("bf16", CPU), name).sample(lq, eps, y)
        psnr = 10 * np.log10(4.0 / float(((out - ref) ** 2).mean()))
        assert psnr > (80 if name == "openvino-fp32" else 40), (name, psnr)


def test_film_backward_on_channels_last_features_without_grad():
    # torch 2.13's CPU GroupNorm backward segfaults on an NHWC input that needs no gradient; FiLM works around it
    from tadsr_cli.train.discriminator import FiLM

    film = FiLM(64, 32).to(memory_format=torch.channels_last)
    f = torch.randn(2, 64, 8, 8).contiguous(memory_format=torch.channels_last)
    film(f, torch.randn(2, 32)).sum().backward()
    assert film.norm.weight.grad is not None


@pytest.mark.parametrize("recipe_file, extra", [
    (SMOKE_TEACHER, ("amp=bf16",)),
    (SMOKE_TADSR, ("amp=bf16", "targets.engine=torch", "loss.gan_start=0")),
], ids=["teacher", "tadsr"])
def test_bf16_resume_is_bit_exact(tmp_path, hr_folder, recipe_file, extra):
    from tadsr_cli.pipeline.settings import cpu_has_fast_bf16

    if "targets.engine=torch" in extra and not cpu_has_fast_bf16():
        pytest.skip("no native bf16 on this CPU")
    common = _overrides(hr_folder, "checkpoint.every=2", "checkpoint.keep=3", *extra)
    full = run_recipe(load_recipe(recipe_file, [*common, "iterations=4"]), tmp_path / "full", console=_quiet(),
                      progress=False, keep_loss_history=True)
    run_recipe(load_recipe(recipe_file, [*common, "iterations=2"]), tmp_path / "part", console=_quiet(),
               progress=False)
    part = run_recipe(load_recipe(recipe_file, [*common, "iterations=4"]), tmp_path / "part", resume=True,
                      console=_quiet(), progress=False, keep_loss_history=True)
    drop = ("it_per_s", "elapsed_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in full.losses[2:]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in part.losses]
