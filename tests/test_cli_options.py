"""The shared options and the habits of the field: Real-ESRGAN spellings, folders in `upscale`, `-o` rules,
hidden old spellings, plain progress lines off a terminal, `models list|pull|info`, `eval` of the default model."""

from __future__ import annotations

import io
import json
import re
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from tadsr_cli.cli import app
from tadsr_cli.commands.options import RUN_OPTIONS, build_run_settings
from tadsr_cli.pipeline import progress
from tadsr_cli.pipeline.settings import cpu_has_fast_bf16, resolve_precision
from tests.test_batch import img, run_cli
from tests.test_upscale_cli import flat, model_file  # noqa: F401  (a pytest fixture)


def defaults(**changes: object) -> dict[str, object]:
    values = {o.name: o.info.default for o in RUN_OPTIONS}
    values.update(changes)
    return values


# ---- settings built once, Real-ESRGAN spellings translated -----------------------------------------------------
def test_run_settings_translate_realesrgan_spellings():
    s = build_run_settings(defaults(suffix="out", fp32=True, tile_pad=10, model_name="m.safetensors", ext="auto",
                                    json_progress=True, outscale=2.0))
    assert s.output.name == "{stem}_out" and s.output.ext is None
    assert s.model.precision == "fp32" and s.model.model == "m.safetensors"
    assert s.tiles.overlap == 20  # Real-ESRGAN pads each tile by P on every side
    assert s.progress == "json" and s.image.outscale == 2.0
    assert build_run_settings(defaults(quiet=True)).progress == "quiet"
    assert build_run_settings(defaults()).progress == "auto" and build_run_settings(defaults()).model.precision == "auto"


@pytest.mark.parametrize("changes, message", [
    ({"face_enhance": True}, "--face_enhance is not supported"),
    ({"fp32": True, "precision": "bf16"}, "--fp32 contradicts --precision bf16"),
    ({"suffix": "out", "name": "{stem}"}, "--suffix and --name"),
    ({"precision": "int8"}, "--precision 'int8': choose one of auto, fp32, bf16, fp16"),
    ({"color_fix": "hist"}, "--color-fix 'hist': choose one of none, wavelet, adain"),
    ({"blend": "flat"}, "--blend 'flat'"),
    ({"sampler": "ddim"}, "--sampler 'ddim'"),
])
def test_choices_and_conflicts_are_checked_in_one_place(changes, message):
    from tadsr_cli.base.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_run_settings(defaults(**changes))


def test_precision_auto_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu, "torch", 1) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert resolve_precision("auto", cpu, "torch", 15) == "fp32"  # teacher sampling: not measured
    assert resolve_precision("auto", cpu, "onnx", 1) == "fp32"
    assert resolve_precision("auto", cuda, "torch", 1) == "fp32"
    assert resolve_precision("fp16", cpu, "torch", 1) == "fp16"


def test_realesrgan_spellings_on_the_command_line(tmp_path, model_file, capsys):  # noqa: F811
    a = img(tmp_path / "a.png", 12, 10)
    code, _, err = run_cli(["upscale", "-i", str(a), "-n", str(model_file), "-s", "2", "--suffix", "out", "--fp32",
                            "--tile_pad", "2", "-t", "16", "--ext", "auto", "-q"], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "a_out.png") as im:
        assert im.size == (24, 20)
    code, _, err = run_cli(["upscale", str(a), "--model", str(model_file), "--face_enhance"], capsys)
    assert code == 2 and "--face_enhance is not supported" in flat(err)
    code, _, err = run_cli(["upscale", "--model", str(model_file)], capsys)
    assert code == 2 and "no input" in flat(err)


def test_old_spellings_are_hidden_aliases():
    runner = CliRunner()
    hidden = {"upscale": ("--json-progress", "--tile_pad", "--face_enhance", "--model_name"),
              "batch": ("--json-progress",), "distill": ("--out",), "models pull": ("--force",)}
    for command, names in hidden.items():
        text = runner.invoke(app, [*command.split(), "--help"], terminal_width=200).output
        for name in names:  # no option row of its own
            assert not re.search(rf"│ {{1,8}}{re.escape(name)}\s", text), (command, name)  # wrapped help is further in
    text = runner.invoke(app, ["upscale", "--help"], terminal_width=200).output
    for name in ("--json", "--output", "--color-fix", "--suffix", "--fp32", "--outscale"):
        assert name in text


# ---- inputs and -o ---------------------------------------------------------------------------------------------
def test_upscale_accepts_folders_like_batch(tmp_path, model_file, capsys):  # noqa: F811
    src = tmp_path / "photos"
    img(src / "a.png")
    img(src / "sub" / "b.jpg", seed=1)
    loose = img(tmp_path / "c.png", seed=2)
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "photos_x4" / "a_x4.png").is_file() and (tmp_path / "photos_x4" / "sub" / "b_x4.jpg").is_file()
    out = tmp_path / "out"
    code, _, err = run_cli(["upscale", str(src), str(loose), "-o", f"{out}/", "--model", str(model_file), "-q"],
                           capsys)
    assert code == 0, err
    assert (out / "photos" / "sub" / "b_x4.jpg").is_file() and (out / "c_x4.png").is_file()


def test_output_file_name_with_several_inputs_is_an_error(tmp_path, model_file, capsys):  # noqa: F811
    a, b = img(tmp_path / "a.png"), img(tmp_path / "b.png", seed=1)
    code, _, err = run_cli(["upscale", str(a), str(b), "-o", str(tmp_path / "one.png"), "--model", str(model_file)],
                           capsys)
    assert code == 2 and "2 inputs need an output folder" in flat(err)
    assert not (tmp_path / "one.png").exists()
    code, _, err = run_cli(["upscale", str(a), "-o", str(tmp_path / "dir.v2") + "/", "--model", str(model_file),
                            "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "dir.v2" / "a_x4.png").is_file()


# ---- progress ----------------------------------------------------------------------------------------------------
def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, model_file, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # every update is "late enough" for a line
    a, b = img(tmp_path / "a.png", 40, 36), img(tmp_path / "b.png", 40, 36, seed=1)
    code, out, err = run_cli(["upscale", str(a), str(b), "--model", str(model_file), "--tile", "16",
                              "--tile-overlap", "4"], capsys)
    assert code == 0 and out == "", err
    lines = err.splitlines()
    done = [line for line in lines if line.startswith("done [")]
    assert done[0].startswith("done [1/2]") and "run ETA" in done[0] and done[1].startswith("done [2/2]")
    assert "\x1b[" not in err  # no terminal control codes in a log
    code, out, _ = run_cli(["upscale", str(a), "--model", str(model_file), "--json", "--overwrite"], capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["event"] == "summary"


def test_reporter_prints_throttled_lines_off_a_terminal(tmp_path, monkeypatch):
    from tadsr_cli.pipeline.batch import Job

    buf = io.StringIO()
    reporter = progress.Reporter("auto", console=Console(file=buf, width=80))
    assert reporter.mode == "lines"
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    with reporter:
        reporter.begin(3)
        reporter.file_start(Job(tmp_path / "clip.mp4", tmp_path / "clip_x4.mp4", "video"), 1, 3)
        tick = reporter.unit_callback("frame")
        for done in (0, 30, 60, 90):
            tick(done, 90)
    lines = buf.getvalue().splitlines()
    assert lines == ["[2/3] clip.mp4: frame 30/90 (33%), " + lines[0].split(", ", 1)[1],
                     lines[1]] and lines[1].startswith("[2/3] clip.mp4: frame 60/90 (66%)"), lines
    assert " fps, ETA " in lines[0]  # neither the first (0) nor the last (90/90) count gets a line
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 3600.0)
    buf.truncate(0)
    buf.seek(0)
    with reporter:
        reporter.file_start(Job(tmp_path / "a.png", tmp_path / "b.png"), 0, 3)
        tick = reporter.unit_callback("tile")
        for done in range(5):
            tick(done, 4)
    assert buf.getvalue() == ""  # a short file: no progress line at all


def test_task_progress_lines_for_eval():
    buf = io.StringIO()
    con = Console(file=buf, width=80)
    with progress.TaskProgress(con, unit="image") as bar:
        for done in range(4):
            bar.update("bicubic", done, 3)
    text = buf.getvalue()
    assert "bicubic: 0/3 images" in text and "bicubic: 3/3 images" in text


@pytest.mark.parametrize("width", [80, 140])
def test_distill_bar_fits_the_terminal(width):
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=True, color_system=None)
    names = ["loss", "reg", "hfsd", "gan", "d_loss", "d_acc"]
    desc = "distill tadsr-tiny-x4-regonly"
    bar = Progress(*progress.training_columns(width, desc, names, 30000), console=con)
    bar.add_task(desc, total=30000, completed=12345, rate="12.34 it/s", **{n: "-1.234e-05" for n in names})
    con.print(bar.get_renderable())
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= width, lines
    assert "12345/30000" in lines[0] and "it/s" in lines[0] and "loss" in lines[0]


# ---- models ------------------------------------------------------------------------------------------------------
def test_models_list_fits_80_columns_and_info_has_the_details():
    runner = CliRunner()
    res = runner.invoke(app, ["models", "list"], terminal_width=80, env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    assert "tadsr-tiny-x4 (default)" in res.output and "models info NAME" in res.output
    assert "tadsr-tiny-x4-video (video default)" in res.output
    res = runner.invoke(app, ["models", "info", "sinsr-v1"], terminal_width=200)
    assert res.exit_code == 0 and "SinSR_v1.pth" in res.output and "tadsr models pull sinsr-v1" in res.output
    res = runner.invoke(app, ["models", "info", "default"], terminal_width=200)
    assert res.exit_code == 0 and "sha256:" in res.output and "tadsr-tiny-x4" in res.output


def test_models_pull_offline_says_how_to_use_from(tmp_path, monkeypatch, capsys):
    from tadsr_cli.models import download

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setenv("TADSR_HOME", str(tmp_path))
    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    code, _, err = run_cli(["models", "pull", "sinsr-v1"], capsys)
    text = flat(err)
    assert code == 2 and "download failed" in text and "--from FOLDER" in text and "SinSR_v1.pth" in text
    code, _, err = run_cli(["models", "pull", "sinsr-v1", "--from", str(tmp_path)], capsys)
    assert code == 2 and "download failed" not in flat(err) and "not found" in flat(err)


# ---- eval ------------------------------------------------------------------------------------------------------
def test_eval_without_model_scores_the_embedded_default(tmp_path, capsys):
    for i in range(2):
        hr = (np.random.default_rng(i).random((64, 64, 3)) * 255).astype(np.uint8)
        img_hr = Image.fromarray(hr)
        (tmp_path / "gt").mkdir(exist_ok=True)
        (tmp_path / "lq").mkdir(exist_ok=True)
        img_hr.save(tmp_path / "gt" / f"{i}.png")
        img_hr.resize((16, 16), Image.BICUBIC).save(tmp_path / "lq" / f"{i}.png")
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["eval", "--lq", str(tmp_path / "lq"), "--gt", str(tmp_path / "gt"), "-o", str(out),
                                   "--no-niqe", "--no-lpips", "--device", "cpu", "--color-fix", "wavelet"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    [method] = rep["methods"]
    assert method["name"] == "tadsr-tiny-x4 (1 step)" and method["model_file"].endswith("tadsr-tiny-x4.safetensors")
    assert method["color_fix"] == "wavelet" and method["precision"] in ("bf16", "fp32")
    assert rep["settings"]["color_fix"] == "wavelet"
    code, _, err = run_cli(["eval", "--lq", str(tmp_path / "lq"), "-o", str(out), "--model", "default", "--no-model"],
                           capsys)
    assert code == 2 and "--no-model contradicts --model" in err
