"""Recipe schema: the shipped recipes load; unknown keys and wrong types name the key and the file line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tadsr_cli.base.errors import RecipeError
from tadsr_cli.train.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """\
kind: tadsr
model:
  teacher: teacher.safetensors
data:
  hr: some/folder
  gt_size: 64
optim:
  g:
    lr: 1.0e-4
loss:
  gan: 0.1
"""


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_load(path: Path):
    recipe = load_recipe(path)
    assert recipe.kind in ("teacher", "tadsr")
    assert recipe.name == path.stem
    recipe.degradation_config()  # degradation section valid


def test_expected_shipped_recipes():
    names = {p.name for p in RECIPES}
    for name in ("tadsr-realsr-x4.yaml", "tadsr-faceir.yaml", "tadsr-tiny-x4-teacher.yaml", "tadsr-tiny-x4.yaml",
                 "smoke-teacher.yaml", "smoke-tadsr.yaml"):
        assert name in names


def test_paper_recipe_values():
    r = load_recipe(ROOT / "recipes" / "tadsr-realsr-x4.yaml")
    assert r.kind == "tadsr" and r.model.teacher == "resshift_realsrx4_s15_v1"
    for o in (r.optim.g, r.optim.d):
        assert o.lr == 5e-5 and o.warmup == 5000 and o.weight_decay == 0.0
    assert (r.iterations, r.batch, r.ema, r.data.gt_size) == (30000, 64, 0.999, 256)
    assert (r.loss.reg, r.loss.hfsd, r.loss.gan) == (1.0, 1.0, 0.02)
    assert r.loss.hfsd_timesteps == [0, 1, 2] and r.loss.disc_timesteps == [0, 13]
    assert r.loss.hfsd_mode == "tadsr"
    face = load_recipe(ROOT / "recipes" / "tadsr-faceir.yaml")
    assert (face.loss.reg, face.loss.hfsd, face.loss.gan) == (1.0, 0.1, 0.2)


def test_tiny_recipes_hold_out_photos():
    """The embedded models' recipes never train on the 20 held-out whole photos their numbers are measured on."""
    from tadsr_cli.train.data_files import TRAIN_HR_EXTRA_HOLDOUT, TRAIN_HR_HOLDOUT
    from tadsr_cli.train.data_stream import split_train_files

    held = set(TRAIN_HR_HOLDOUT) | set(TRAIN_HR_EXTRA_HOLDOUT)
    assert len(held) == 20
    for name in ("tadsr-tiny-x4-teacher.yaml", "tadsr-tiny-x4-teacher-clean.yaml", "tadsr-tiny-x4-regonly.yaml",
                 "tadsr-tiny-x4-stage2.yaml", "tadsr-tiny-x4.yaml"):
        r = load_recipe(ROOT / "recipes" / name)
        assert set(r.data.exclude) == held
        assert set(r.validation.files) == set(TRAIN_HR_HOLDOUT)
        assert r.data.fixed_crops is False
        if (ROOT.parent / "shared" / "data" / "train-hr-extra").is_dir():
            files, _ = split_train_files(r)
            assert len(files) == 26 + 362 - 20 and not {f.name for f in files} & held
    teacher = load_recipe(ROOT / "recipes" / "tadsr-tiny-x4-teacher.yaml")
    assert teacher.model.config is not None
    assert teacher.model.config.autoencoder.kind == "pixel_unshuffle"
    assert teacher.model.config.autoencoder.channels == 48
    assert teacher.model.config.prediction == "residual" and teacher.model.config.schedule.steps == 15


def test_embedded_recipes_chain_into_each_other():
    """Each stage starts from the file the previous stage writes, so the recipes alone remake the shipped models."""
    def load(name: str):
        return load_recipe(ROOT / "recipes" / f"{name}.yaml")

    def output(name: str) -> str:
        return f"{load(name).output_dir}/model.safetensors"

    teacher_b, stage1, stage2, final = (load("tadsr-tiny-x4-teacher-clean"), load("tadsr-tiny-x4-regonly"),
                                        load("tadsr-tiny-x4-stage2"), load("tadsr-tiny-x4"))
    assert teacher_b.model.init == output("tadsr-tiny-x4-teacher")
    assert stage1.model.teacher == stage2.model.teacher == output("tadsr-tiny-x4-teacher")
    assert stage2.model.init == output("tadsr-tiny-x4-regonly")
    assert final.model.teacher == output("tadsr-tiny-x4-teacher-clean") and final.model.init == output("tadsr-tiny-x4-stage2")
    # The clean share is what stage B and stage 3 add; the stage-A chain keeps Real-ESRGAN degradations only.
    assert teacher_b.degradation_config().light_prob == final.degradation_config().light_prob == 0.3
    assert load("tadsr-tiny-x4-teacher").degradation_config().light_prob == stage2.degradation_config().light_prob == 0
    assert final.teacher_cache != stage2.teacher_cache  # another teacher: its targets must not mix
    # The video student is stage 3 plus the fidelity term: same start, teacher, data, seed and teacher targets.
    video = load("tadsr-tiny-x4-video")
    assert (video.model.teacher, video.model.init, video.teacher_cache, video.seed, video.iterations) == (
        final.model.teacher, final.model.init, final.teacher_cache, final.seed, final.iterations)
    assert video.degradation_config() == final.degradation_config()
    assert video.loss.fidelity > 0 == final.loss.fidelity and video.loss.fidelity_on == "light"
    assert video.name == "tadsr-tiny-x4-video" and video.output_dir != final.output_dir


def test_unknown_top_level_key_names_key_and_line(tmp_path):
    path = _write(tmp_path, GOOD + "iteratons: 5\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:12: iteratons: unknown key 'iteratons'"):
        load_recipe(path)


def test_nested_unknown_key_names_key_and_line(tmp_path):
    path = _write(tmp_path, GOOD.replace("    lr: 1.0e-4\n", "    lr: 1.0e-4\n    lr_max: 3\n"))
    with pytest.raises(RecipeError, match=r"r\.yaml:10: optim\.g\.lr_max: unknown key"):
        load_recipe(path)


def test_wrong_type_names_key_and_line(tmp_path):
    path = _write(tmp_path, GOOD.replace("lr: 1.0e-4", "lr: fast"))
    with pytest.raises(RecipeError, match=r"r\.yaml:9: optim\.g\.lr: expected a number, got 'fast'"):
        load_recipe(path)
    path = _write(tmp_path, GOOD + "batch: [8]\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:12: batch: expected an integer"):
        load_recipe(path)
    path = _write(tmp_path, GOOD + "amp: fp8\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:12: amp: expected 'none' \| 'bf16'"):
        load_recipe(path)


def test_inline_model_errors_name_key_and_line(tmp_path):
    text = """\
kind: teacher
model:
  denoiser:
    model_chanels: 32
data: {hr: x}
"""
    with pytest.raises(RecipeError, match=r"r\.yaml:4: model\.denoiser\.model_chanels: unknown key"):
        load_recipe(_write(tmp_path, text))
    text = """\
kind: teacher
model:
  denoiser:
    channel_mult: [1, two]
data: {hr: x}
"""
    with pytest.raises(RecipeError, match=r"r\.yaml:4: model\.denoiser\.channel_mult\[1\]: expected an integer"):
        load_recipe(_write(tmp_path, text))
    text = """\
kind: teacher
model:
  denoiser: {in_channels: 3, out_channels: 3}
  autoencoder: {kind: pixel_unshuffle, factor: 4}
data: {hr: x}
"""
    with pytest.raises(RecipeError, match=r"r\.yaml:2: model: .*latent channels"):
        load_recipe(_write(tmp_path, text))


def test_degradation_errors_name_key_and_line(tmp_path):
    path = _write(tmp_path, GOOD + "degradation:\n  kind: realesrgan\n  jpeg_rang: [30, 95]\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:14: .*'jpeg_rang'"):
        load_recipe(path)
    path = _write(tmp_path, GOOD + "degradation:\n  kind: realesrgan\n  blur_sigma: [3.0, 0.2]\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:14: .*blur_sigma"):
        load_recipe(path)


def test_teacher_kind_rejects_teacher_file(tmp_path):
    path = _write(tmp_path, GOOD.replace("kind: tadsr", "kind: teacher"))
    with pytest.raises(RecipeError, match=r"r\.yaml:3: model\.teacher: only `kind: tadsr`"):
        load_recipe(path)


def test_set_overrides(tmp_path):
    path = _write(tmp_path, GOOD)
    r = load_recipe(path, ["optim.g.lr=3e-4", "loss.hfsd_timesteps=[0, 1]", "validation.every=7", "data.gt_size=128"])
    assert r.optim.g.lr == 3e-4 and r.loss.hfsd_timesteps == [0, 1] and r.validation.every == 7
    assert r.data.gt_size == 128
    with pytest.raises(RecipeError, match=r"--set optim\.g\.lr: expected a number"):
        load_recipe(path, ["optim.g.lr=fast"])
    with pytest.raises(RecipeError, match=r"--set loss\.foo: unknown key 'foo'"):
        load_recipe(path, ["loss.foo=1"])
    with pytest.raises(RecipeError, match=r"expected KEY=VALUE"):
        load_recipe(path, ["loss.gan"])


def test_semantic_checks(tmp_path):
    with pytest.raises(RecipeError, match=r"batch 6 must be a multiple of grad_accum 4"):
        load_recipe(_write(tmp_path, GOOD + "batch: 6\ngrad_accum: 4\n"))
    with pytest.raises(RecipeError, match=r"r\.yaml:4: data: give `hr`"):
        load_recipe(_write(tmp_path, GOOD.replace("  hr: some/folder\n", "  workers: 1\n")))
    with pytest.raises(RecipeError, match=r"missing required key 'kind'"):
        parse_recipe({"model": {}, "data": {}}, "x.yaml")


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match=r"r\.yaml:2: not valid YAML"):
        load_recipe(_write(tmp_path, "kind: tadsr\n  model: [\n"))
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")
