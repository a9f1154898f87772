"""Teacher training, TAD-SR distillation and the shared training loop on tiny CPU runs (recipes/smoke-*.yaml)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from tadsr_cli.base.errors import RecipeError, TrainingError
from tadsr_cli.models.config import DenoiserConfig
from tadsr_cli.train.discriminator import TimeAwareDiscriminator, default_feature_blocks, input_block_channels
from tadsr_cli.train.distributed import setup_distributed
from tadsr_cli.train.loop import train
from tadsr_cli.train.losses import d_hinge_loss, g_hinge_loss
from tadsr_cli.train.recipe import load_recipe
from tadsr_cli.train.run import make_task, run_recipe

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TEACHER = ROOT / "recipes" / "smoke-teacher.yaml"
SMOKE_TADSR = ROOT / "recipes" / "smoke-tadsr.yaml"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models on a shared 2-core machine: one intra-op thread is faster and steadier.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    """Six small synthetic 'photos' (smooth colour fields with edges), enough for 64x64 crops."""
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i in range(6):
        base = rng.uniform(0, 255, size=(6, 6, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(base).resize((96, 96), Image.BICUBIC)).copy()
        img[rng.integers(0, 80) :, rng.integers(0, 80) :: 7] = 255  # some high-frequency structure
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


def _overrides(hr: Path, *extra: str) -> list[str]:
    return [
        f"data.hr={hr}",
        "data.exclude=[]",
        f"validation.folder={hr}",
        "validation.files=[img0.png, img1.png]",
        "validation.lq_size=16",
        *extra,
    ]


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------------------------
def test_feature_blocks_of_the_official_layout():
    cfg = DenoiserConfig()
    assert default_feature_blocks(cfg) == [3, 6, 9, 11]
    assert input_block_channels(cfg) == [160, 160, 160, 160, 320, 320, 320, 320, 320, 320, 640, 640]


def test_discriminator_gradients_reach_only_heads_film_and_student():
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(0)
    teacher = DiffusionSR(tiny_test_config("x0")).eval().requires_grad_(False)
    student = DiffusionSR(tiny_test_config("x0"))
    student.load_state_dict(teacher.state_dict())
    student.denoiser.requires_grad_(True)
    disc = TimeAwareDiscriminator(teacher.denoiser, teacher.config.denoiser, teacher.schedule, hidden=16, time_dim=16)
    assert not any(p is q for p in disc.parameters() for q in teacher.parameters())
    assert not any(k.startswith("_encoder") or "input_blocks" in k for k in disc.state_dict())

    lq = torch.rand(2, 3, 16, 16) * 2 - 1
    gt = torch.rand(2, 3, 64, 64) * 2 - 1
    y, x0 = teacher.lq_latent(lq), teacher.encode(gt)
    x_T = teacher.schedule.prior_sample(y, torch.randn_like(y))
    x_s = student.predict_x0(x_T, y, 14, lq)
    t = torch.tensor([0, 13])
    n = torch.randn_like(y)

    # D step: real and a detached fake -> gradient into D only
    real = disc(teacher.schedule.q_sample(x0, y, t, n), t, lq)
    fake = disc(teacher.schedule.q_sample(x_s.detach(), y, t, n), t, lq)
    assert real.shape[0] == 2 and real.ndim == 2
    d_hinge_loss(real, fake).backward()
    assert all(p.grad is not None for p in disc.parameters())
    assert any(p.grad.abs().sum() > 0 for p in disc.heads.parameters())
    assert any(p.grad.abs().sum() > 0 for p in disc.film.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in student.parameters())

    # G step: D frozen -> gradient through the frozen teacher encoder into the student only
    disc.zero_grad(set_to_none=True)
    disc.requires_grad_(False)
    g_hinge_loss(disc(teacher.schedule.q_sample(x_s, y, t, n), t, lq)).backward()
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in student.denoiser.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_discriminator_time_conditioning_changes_logits():
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(1)
    teacher = DiffusionSR(tiny_test_config("x0")).eval().requires_grad_(False)
    disc = TimeAwareDiscriminator(teacher.denoiser, teacher.config.denoiser, teacher.schedule, blocks=[1],
                                  middle=False, hidden=8, time_dim=8)
    for film in disc.film:  # give the zero-initialised convs some weight
        torch.nn.init.normal_(film.conv.weight, std=0.1)
    x = torch.randn(1, 48, 16, 16)
    lq = torch.zeros(1, 3, 16, 16)
    f = disc.features(x, torch.tensor([3]), lq)
    assert len(f) == 1
    # same features, different t for the FiLM part
    from tadsr_cli.models.unet_swin import timestep_embedding

    a = disc.heads[0](disc.film[0](f[0], timestep_embedding(torch.tensor([0]), 8)))
    b = disc.heads[0](disc.film[0](f[0], timestep_embedding(torch.tensor([9]), 8)))
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------------------------------------------------------
# Smoke runs
# ---------------------------------------------------------------------------------------------------------------
def test_smoke_teacher_run_lowers_loss_and_exports(tmp_path, hr_folder):
    recipe = load_recipe(SMOKE_TEACHER, _overrides(
        hr_folder, "iterations=30", "data.length=4", "data.fixed_crops=true", "checkpoint.every=15", "log.every=1",
    ))
    out = tmp_path / "run"
    result = run_recipe(recipe, out, console=_quiet(), progress=False, keep_loss_history=True)
    losses = [r["loss"] for r in result.losses]
    assert len(losses) == 30
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6]), losses
    # outputs
    assert (out / "log.csv").read_text().splitlines()[0].startswith("step,lr,loss")
    assert len(_records(out)) == 30
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step-00000015.pt", "step-00000030.pt"]
    assert sorted(p.name for p in (out / "validation" / "step-00000030").glob("*.png")) == ["img0.png", "img1.png"]
    assert "psnr_y" in result.metrics
    from tadsr_cli.models.checkpoints import load_model_file

    model = load_model_file(result.model_path)
    assert model.config.name == "smoke-teacher"
    with torch.no_grad():
        hr = model.sample(torch.zeros(1, 3, 16, 16), torch.zeros(1, 48, 16, 16))
    assert hr.shape == (1, 3, 64, 64)
    # --export-only: the EMA model of the newest checkpoint, without training (the same weights at the end)
    from tadsr_cli.train.export import export_checkpoint

    exported = load_model_file(export_checkpoint(recipe, out, console=_quiet()))
    for key, value in model.denoiser.state_dict().items():
        assert torch.equal(value, exported.denoiser.state_dict()[key]), key


def test_smoke_distill_run_lowers_losses_and_exports(tmp_path, hr_folder):
    recipe = load_recipe(SMOKE_TADSR, _overrides(
        hr_folder, "iterations=12", "data.length=4", "data.fixed_crops=true", "log.every=1",
    ))
    out = tmp_path / "run"
    result = run_recipe(recipe, out, console=_quiet(), progress=False, keep_loss_history=True)
    recs = result.losses
    assert len(recs) == 12
    for key in ("g_total", "reg", "hfsd", "gan_g", "d_loss", "d_real", "d_fake"):
        assert all(np.isfinite(r[key]) for r in recs), key
    reg = [r["reg"] for r in recs]
    assert np.mean(reg[-3:]) < 0.8 * np.mean(reg[:3]), reg
    assert all(r["d_loss"] > 0 for r in recs)
    from tadsr_cli.models.checkpoints import load_model_file

    student = load_model_file(result.model_path)
    assert student.config.name == "smoke-tadsr" and student.config.one_step_timestep == 3
    with torch.no_grad():
        hr = student.one_step(torch.zeros(1, 3, 16, 16), torch.zeros(1, 48, 16, 16))
    assert hr.shape == (1, 3, 64, 64) and torch.isfinite(hr).all()
    state = torch.load(out / "checkpoints" / "step-00000012.pt", weights_only=True)
    assert {"model", "ema", "disc", "opt_g", "opt_d", "rng", "step"} <= set(state)


def test_resume_is_bit_exact(tmp_path, hr_folder):
    common = _overrides(hr_folder, "checkpoint.every=3", "checkpoint.keep=5", "log.every=1")
    full = tmp_path / "full"
    run_recipe(load_recipe(SMOKE_TADSR, [*common, "iterations=5"]), full, console=_quiet(), progress=False)
    part = tmp_path / "part"
    run_recipe(load_recipe(SMOKE_TADSR, [*common, "iterations=3"]), part, console=_quiet(), progress=False)
    console = _quiet()
    run_recipe(load_recipe(SMOKE_TADSR, [*common, "iterations=5"]), part, resume=True, console=console,
               progress=False)
    assert "resumed from" in console.file.getvalue()
    assert "recipe changed" not in console.file.getvalue()  # `iterations` may change freely
    a, b = _records(full), _records(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    keys = ("g_total", "reg", "hfsd", "gan_g", "d_loss", "d_real", "d_fake")
    for ra, rb in zip(a, b, strict=True):
        assert {k: ra[k] for k in keys} == {k: rb[k] for k in keys}, (ra, rb)
    sa = torch.load(full / "checkpoints" / "step-00000005.pt", weights_only=True)
    sb = torch.load(part / "checkpoints" / "step-00000005.pt", weights_only=True)
    for k in sa["ema"]:
        assert torch.equal(sa["ema"][k], sb["ema"][k]), k


def test_gradient_accumulation_sees_the_same_batch(tmp_path, hr_folder):
    common = _overrides(hr_folder, "iterations=2", "log.every=1", "validation.n_images=0")
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_recipe(load_recipe(SMOKE_TADSR, common), whole, console=_quiet(), progress=False)
    run_recipe(load_recipe(SMOKE_TADSR, [*common, "grad_accum=2"]), split, console=_quiet(), progress=False)
    a, b = _records(whole), _records(split)
    # same samples and prior noise, so the same teacher targets and student outputs before the first update
    assert b[0]["reg"] == pytest.approx(a[0]["reg"], rel=1e-5)
    assert all(np.isfinite(r["g_total"]) for r in b) and len(b) == 2


def test_corrupt_last_checkpoint_falls_back(tmp_path, hr_folder):
    common = _overrides(hr_folder, "checkpoint.every=2", "log.every=1")
    out = tmp_path / "run"
    run_recipe(load_recipe(SMOKE_TEACHER, [*common, "iterations=4"]), out, console=_quiet(), progress=False)
    last = out / "checkpoints" / "step-00000004.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    last.write_bytes(bytes(data))
    console = _quiet()
    result = run_recipe(load_recipe(SMOKE_TEACHER, [*common, "iterations=5"]), out, resume=True, console=console,
                        progress=False)
    text = console.file.getvalue()
    assert "step-00000004.pt" in text and "falling back" in text and "step-00000002.pt" in text
    assert "resumed from" in text and "(iteration 2)" in text
    assert result.step == 5
    assert [r["step"] for r in _records(out)] == [1, 2, 3, 4, 5]


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, hr_folder):
    out = tmp_path / "run"
    recipe = load_recipe(SMOKE_TEACHER, _overrides(hr_folder, "iterations=1", "validation.n_images=0"))
    run_recipe(recipe, out, console=_quiet(), progress=False)
    with pytest.raises(TrainingError, match="already holds checkpoints"):
        run_recipe(recipe, out, console=_quiet(), progress=False)


def _task(recipe):
    env = setup_distributed(recipe.device)
    return make_task(recipe, env, _quiet())


def test_nan_loss_stops_with_the_iteration(tmp_path, hr_folder):
    recipe = load_recipe(SMOKE_TEACHER, _overrides(hr_folder, "iterations=6", "checkpoint.every=2"))
    task = _task(recipe)
    original = task.train_step

    def poisoned(batches, step):
        losses = original(batches, step)
        if step == 2:  # the third iteration
            losses["loss"] = torch.tensor(float("nan"))
        return losses

    task.train_step = poisoned
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss loss became nan at iteration 3.*step-00000002\.pt"):
        train(task, out, console=_quiet(), progress=False)
    assert [p.name for p in (out / "checkpoints").glob("*.pt")] == ["step-00000002.pt"]
    assert not (out / "model.safetensors").exists()


def test_ctrl_c_saves_a_checkpoint_then_exits(tmp_path, hr_folder):
    recipe = load_recipe(SMOKE_TEACHER, _overrides(hr_folder, "iterations=50", "checkpoint.every=100"))
    task = _task(recipe)
    original = task.train_step

    def interrupted(batches, step):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-iteration: finish it, save, stop
        return original(batches, step)

    task.train_step = interrupted
    out = tmp_path / "run"
    console = _quiet()
    before = signal.getsignal(signal.SIGINT)  # whatever an earlier in-process command left installed
    with pytest.raises(KeyboardInterrupt):
        train(task, out, console=console, progress=False)
    assert (out / "checkpoints" / "step-00000002.pt").is_file()
    assert "interrupted: saved" in console.file.getvalue()
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


def test_paired_folders(tmp_path, hr_folder):
    lq_dir, gt_dir = tmp_path / "lq", tmp_path / "gt"
    lq_dir.mkdir()
    gt_dir.mkdir()
    for f in sorted(hr_folder.glob("*.png")):
        img = Image.open(f)
        img.save(gt_dir / f.name)
        img.resize((24, 24), Image.BICUBIC).save(lq_dir / f.name)
    recipe = load_recipe(SMOKE_TEACHER, [
        *_overrides(hr_folder, "iterations=2", "validation.n_images=0"),
        "data.hr=null", f"data.lq={lq_dir}", f"data.gt={gt_dir}",
    ])
    result = run_recipe(recipe, tmp_path / "run", console=_quiet(), progress=False)
    assert result.step == 2 and result.model_path.is_file()


def test_empty_data_folder_fails_before_training(tmp_path, hr_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    recipe = load_recipe(SMOKE_TEACHER, [*_overrides(hr_folder), f"data.hr={empty}"])
    with pytest.raises(TrainingError, match="no usable images"):
        run_recipe(recipe, tmp_path / "run", console=_quiet(), progress=False)


def test_teacher_cache_hits_and_gives_the_same_losses(tmp_path, hr_folder):
    common = _overrides(hr_folder, "iterations=2", "data.length=4", "data.fixed_crops=true", "log.every=1",
                        "validation.n_images=0", "loss.gan=0")
    plain = tmp_path / "plain"
    run_recipe(load_recipe(SMOKE_TADSR, common), plain, console=_quiet(), progress=False)
    cached = tmp_path / "cached"
    cache = tmp_path / "cache"
    recipe = load_recipe(SMOKE_TADSR, [*common, f"teacher_cache={cache}"])
    env = setup_distributed("cpu")
    task = make_task(recipe, env, _quiet())
    train(task, cached, console=_quiet(), progress=False)
    assert task.cache is not None and task.cache.misses == 4 and task.cache.hits == 4
    assert len(list(cache.rglob("*.safetensors"))) == 4
    keys = ("g_total", "reg", "hfsd")
    assert [{k: r[k] for k in keys} for r in _records(plain)] == [{k: r[k] for k in keys} for r in _records(cached)]


def test_cli_reports_recipe_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: tadsr\nmodel: {teacher: x}\ndata: {hr: x}\nbatchsize: 3\n")
    proc = subprocess.run([sys.executable, "-m", "tadsr_cli", "distill", "--recipe", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "bad.yaml:4" in proc.stderr and "batchsize" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes(tmp_path, hr_folder):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tadsr_cli", "distill", "--recipe", str(SMOKE_TADSR), "--out", str(out), "--quiet",
           *[a for o in _overrides(hr_folder, "iterations=3", "checkpoint.every=2") for a in ("--set", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=150, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file()
    recs = _records(out)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step-00000002.pt", "step-00000003.pt"]


# ---------------------------------------------------------------------------------------------------------------
# Prior temperature and warm start (the embedded default's stage 2)
# ---------------------------------------------------------------------------------------------------------------
def test_prior_noise_scale_scales_the_prior_and_travels_with_the_weights(tmp_path):
    from tadsr_cli.models.checkpoints import load_model_file, save_model
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(0)
    model = DiffusionSR(tiny_test_config("x0")).eval()
    lq = torch.rand(1, 3, 16, 16) * 2 - 1
    noise = torch.randn(1, model.latent_channels, 16, 16)
    with torch.no_grad():
        full = model.one_step(lq, noise * 0.5)
        model.config.prior_noise_scale = 0.5
        cooler = model.one_step(lq, noise)
        assert torch.allclose(full, cooler, atol=1e-6)
        assert not torch.allclose(cooler, model.one_step(lq, noise * 0.9), atol=1e-3)
    reloaded = load_model_file(save_model(model, tmp_path / "m.safetensors"))
    assert reloaded.config.prior_noise_scale == 0.5


def test_warm_started_student_uses_init_weights_and_the_recipe_temperature(tmp_path, hr_folder):
    from tadsr_cli.models.checkpoints import load_model_file, save_model
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(0)
    teacher = DiffusionSR(tiny_test_config("residual"))
    for p in teacher.denoiser.parameters():  # a non-trivial teacher (the residual model starts at zero output)
        p.data.add_(torch.randn_like(p) * 0.02)
    init = DiffusionSR(tiny_test_config("residual"))
    init.load_state_dict(teacher.state_dict())
    for p in init.denoiser.parameters():
        p.data.add_(torch.randn_like(p) * 0.02)
    teacher_file = save_model(teacher, tmp_path / "teacher.safetensors")
    init_file = save_model(init, tmp_path / "init.safetensors")
    text = SMOKE_TADSR.read_text().split("model:")[0] + (
        f"model:\n  teacher: {teacher_file}\n  init: {init_file}\n  prior_noise_scale: 0.5\n"
    ) + "data:" + SMOKE_TADSR.read_text().split("\ndata:", 1)[1]
    recipe_file = tmp_path / "warm.yaml"
    recipe_file.write_text(text)
    recipe = load_recipe(recipe_file, _overrides(
        hr_folder, "iterations=1", "optim.g.lr=1e-12", "loss.gan=0", "loss.hfsd=0", "validation.every=0",
    ))
    result = run_recipe(recipe, tmp_path / "run", console=_quiet(), progress=False)
    student = load_model_file(result.model_path)
    assert student.config.prior_noise_scale == 0.5
    for key, value in init.denoiser.state_dict().items():  # lr ~0: still the init weights, not the teacher's
        assert torch.allclose(value, student.denoiser.state_dict()[key], atol=1e-8), key
    bad = recipe_file.read_text().replace("prior_noise_scale: 0.5", "prior_noise_scale: 9")
    recipe_file.write_text(bad)
    with pytest.raises(Exception, match="prior_noise_scale"):
        load_recipe(recipe_file)


def test_fidelity_loss_weights_each_crop():
    from tadsr_cli.train.losses import fidelity_loss

    x_s, x_hr = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    x_hr[1] = 3.0
    assert fidelity_loss(x_s, x_hr, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5)  # (1 + 0) / 2
    assert fidelity_loss(x_s, x_hr, torch.tensor([0.0, 1.0])).item() == pytest.approx(4.5)  # (0 + 9) / 2


@pytest.mark.parametrize("light_prob, on, expect_zero", [(0.0, "light", True), (1.0, "light", False),
                                                         (0.0, "all", False)])
def test_fidelity_term_reaches_only_the_chosen_crops(tmp_path, hr_folder, light_prob, on, expect_zero):
    recipe = load_recipe(SMOKE_TADSR, _overrides(
        hr_folder, "iterations=2", "data.length=4", "log.every=1", "validation.every=0", "loss.fidelity=2",
        f"loss.fidelity_on={on}", f"degradation.light_prob={light_prob}",
    ))
    result = run_recipe(recipe, tmp_path / "run", console=_quiet(), progress=False, keep_loss_history=True)
    fid = [r["fidelity"] for r in result.losses]
    assert all(f == 0.0 for f in fid) if expect_zero else all(f > 0.0 for f in fid), fid


def test_fidelity_weight_is_validated(hr_folder):
    from tadsr_cli.base.errors import RecipeError

    with pytest.raises(RecipeError, match="fidelity"):
        load_recipe(SMOKE_TADSR, _overrides(hr_folder, "loss.fidelity=-1"))
    with pytest.raises(RecipeError, match="fidelity_on"):
        load_recipe(SMOKE_TADSR, _overrides(hr_folder, "loss.fidelity_on=sometimes"))


def test_feature_match_loss_is_zero_only_for_matching_features():
    from tadsr_cli.train.losses import feature_match_loss

    torch.manual_seed(0)
    real = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    assert feature_match_loss([f.clone() for f in real], real).item() == pytest.approx(0.0, abs=1e-9)
    # Channel-normalised: a feature map scaled by a positive factor says the same thing.
    assert feature_match_loss([3.0 * f for f in real], real).item() == pytest.approx(0.0, abs=1e-6)
    # Opposite unit vectors differ by 2 at every position: squared norm 4, summed over the two taps.
    assert feature_match_loss([-f for f in real], real).item() == pytest.approx(8.0, rel=1e-5)
    fake = [f.clone().requires_grad_(True) for f in real]
    feature_match_loss([f + 0.1 * torch.randn_like(f) for f in fake], real).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fake)
    # an all-zero feature vector (a dead ReLU position) gives a finite gradient, not NaN
    dead = torch.zeros(1, 8, 2, 2, requires_grad=True)
    feature_match_loss([dead], [torch.randn(1, 8, 2, 2)]).backward()
    assert torch.isfinite(dead.grad).all()


@pytest.mark.parametrize("gan", [0.0, 0.01])
def test_feature_term_trains_the_student_with_or_without_the_discriminator(tmp_path, hr_folder, gan):
    recipe = load_recipe(SMOKE_TADSR, _overrides(
        hr_folder, "iterations=2", "data.length=4", "log.every=1", "validation.every=0", "loss.feature=1",
        f"loss.gan={gan}", "loss.gan_start=0",
    ))
    result = run_recipe(recipe, tmp_path / "run", console=_quiet(), progress=False, keep_loss_history=True)
    assert all(r["feature"] > 0.0 for r in result.losses), result.losses
    assert all((r["d_loss"] > 0.0) == (gan > 0) for r in result.losses), result.losses
    with pytest.raises(RecipeError, match="feature"):
        load_recipe(SMOKE_TADSR, _overrides(hr_folder, "loss.feature=-1"))


def test_perceptual_term_is_the_vgg_distance_on_decoded_images(tmp_path, hr_folder):
    from tadsr_cli.train.perceptual import PerceptualLoss

    loss = PerceptualLoss(taps=2, crop=16)
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss(hr.clone(), hr).item() == pytest.approx(0.0, abs=1e-7)
    sr = (hr + 0.3 * torch.randn_like(hr)).requires_grad_(True)
    value = loss(sr, hr, torch.Generator().manual_seed(1))
    value.backward()
    assert value.item() > 0.01 and sr.grad is not None and sr.grad.abs().sum() > 0
    # blur: a pattern at the latent's 4-pixel period costs the blurred loss less than the plain one
    grid = torch.zeros(1, 3, 32, 32)
    grid[..., ::4, ::4] = 0.8
    flat = torch.zeros(1, 3, 32, 32)
    blurred = PerceptualLoss(taps=2, crop=0, blur=True)
    assert 0.0 < blurred(grid, flat).item() < loss(grid, flat).item()
    # the same generator state draws the same windows
    again = loss(sr.detach(), hr, torch.Generator().manual_seed(1))
    assert again.item() == pytest.approx(value.item(), rel=1e-6)

    recipe = load_recipe(SMOKE_TADSR, _overrides(
        hr_folder, "iterations=2", "data.length=4", "log.every=1", "validation.every=0", "loss.perceptual=1",
        "loss.perceptual_crop=16", "loss.perceptual_taps=2",
    ))
    result = run_recipe(recipe, tmp_path / "run", console=_quiet(), progress=False, keep_loss_history=True)
    assert all(r["perceptual"] > 0.0 for r in result.losses), result.losses
    for bad in ("loss.perceptual=-1", "loss.perceptual_taps=6", "loss.perceptual_crop=-2"):
        with pytest.raises(RecipeError, match="perceptual"):
            load_recipe(SMOKE_TADSR, _overrides(hr_folder, bad))
