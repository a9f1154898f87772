"""`tadsr batch` and the batch runner: discovery, naming, skip/overwrite, sharding, failures, interruption."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.base.interrupts import sigterm_as_interrupt
from tadsr_cli.pipeline.batch import (
    Interrupted,
    Job,
    check_template,
    find_inputs,
    output_name,
    parse_shard,
    plan_folder,
    run_jobs,
    select_shard,
)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from tadsr_cli.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    import torch

    from tadsr_cli.models.checkpoints import save_model
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(DiffusionSR(tiny_test_config()), path)
    return path


def img(path: Path, w: int = 12, h: int = 10, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "in"
    img(root / "a.png")
    img(root / "b.jpg", seed=1)
    img(root / "sub" / "c.webp", seed=2)
    img(root / "sub" / "deeper" / "d.tif", seed=3)
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "Thumbs.db").write_bytes(b"\x00")
    (root / ".hidden").mkdir()
    img(root / ".hidden" / "e.png")
    return root


# ---- library -----------------------------------------------------------------------------------------------------
def test_find_inputs_ignores_non_images(tree):
    found = [(p.relative_to(tree).as_posix(), k) for p, k in find_inputs(tree)]
    assert found == [("a.png", "image"), ("b.jpg", "image"), ("sub/c.webp", "image"), ("sub/deeper/d.tif", "image")]


def test_output_folder_inside_input_is_excluded(tree):
    out = tree / "out"
    img(out / "a_x4.png")
    jobs = plan_folder(tree, out, "{stem}_x{scale}", 4, None)
    assert all(out not in j.src.parents for j in jobs)
    assert [j.dst.relative_to(out).as_posix() for j in jobs] == [
        "a_x4.png", "b_x4.jpg", "sub/c_x4.webp", "sub/deeper/d_x4.tif"]


def test_naming_template():
    src = Path("x/photo.jpeg")
    assert output_name(src, "{stem}_x{scale}", 4, None) == "photo_x4.jpeg"
    assert output_name(src, "{stem}", 4, ".png") == "photo.png"
    assert output_name(src, "{stem}-{ext}-{scale}x", 2.5, ".webp") == "photo-jpeg-2.5x.webp"
    for bad in ("{stem}/{scale}", "{name}", "{stem", ""):
        with pytest.raises(ConfigError):
            check_template(bad)


def test_shard_parsing_and_selection():
    assert parse_shard("1/4", {}) == (0, 4)
    assert parse_shard("4/4", {}) == (3, 4)
    assert parse_shard(None, {}) is None
    assert parse_shard(None, {"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)  # torchrun
    assert parse_shard(None, {"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert parse_shard("2/2", {"RANK": "0", "WORLD_SIZE": "2"}) == (1, 2)  # explicit wins
    for bad in ("0/4", "5/4", "a/b", "3", "1/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad, {})
    jobs = [Job(Path(f"{i}.png"), Path(f"o{i}.png")) for i in range(10)]
    parts = [select_shard(jobs, (k, 3)) for k in range(3)]
    assert sorted(j.src.name for p in parts for j in p) == sorted(j.src.name for j in jobs)
    assert [len(p) for p in parts] == [4, 3, 3]


def test_runner_skips_fails_and_goes_on(tmp_path):
    (tmp_path / "exists.png").write_bytes(b"old")
    jobs = [Job(tmp_path / f"{n}.in", tmp_path / f"{n}.png") for n in ("ok", "bad", "exists", "ok2")]
    jobs.append(Job(tmp_path / "dup.in", tmp_path / "ok.png"))  # collides with the first output
    prepared = []

    def process(job: Job):
        if job.src.stem == "bad":
            raise ValueError("broken\nfile")
        job.dst.write_bytes(b"new")

    jobs.append(Job(tmp_path / "clip.in", tmp_path / "clip.mp4", kind="video"))
    res = run_jobs(jobs, process, prepare=prepared.append)
    assert [r.status for r in res] == ["done", "failed", "skipped", "done", "failed", "done"]
    assert res[1].message == "ValueError: broken file"  # one line
    assert "would also be written" in res[4].message
    assert prepared == ["image", "video"]  # once per kind: a video may have its own default model
    assert (tmp_path / "exists.png").read_bytes() == b"old"
    res = run_jobs(jobs[2:3], process, overwrite=True)
    assert res[0].status == "done" and (tmp_path / "exists.png").read_bytes() == b"new"
    # nothing to do: the model is never prepared
    prepared.clear()
    run_jobs(jobs[2:3], process, prepare=prepared.append)
    assert prepared == []


def test_runner_interrupt_and_sigterm(tmp_path):
    jobs = [Job(tmp_path / f"{i}.in", tmp_path / f"{i}.png") for i in range(3)]

    def process(job: Job):
        if job.src.stem == "1":
            os.kill(os.getpid(), signal.SIGTERM)  # becomes KeyboardInterrupt
        job.dst.write_bytes(b"x")

    with sigterm_as_interrupt(), pytest.raises(Interrupted) as ei:
        run_jobs(jobs, process)
    assert [r.status for r in ei.value.results] == ["done"]
    assert signal.getsignal(signal.SIGTERM) is not None


# ---- the command ---------------------------------------------------------------------------------------------------
def test_batch_mirrors_tree_skips_and_overwrites(tree, tmp_path, model_file, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["batch", str(tree), "-o", str(out), "--model", str(model_file), "--tile", "16",
                            "--tile-overlap", "4"], capsys)
    assert code == 0, err
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert made == ["a_x4.png", "b_x4.jpg", "sub/c_x4.webp", "sub/deeper/d_x4.tif"]
    with Image.open(out / "sub" / "deeper" / "d_x4.tif") as im:
        assert im.size == (48, 40)
    assert "summary" in err
    # re-run: everything skipped, nothing rewritten
    stamp = (out / "a_x4.png").stat().st_mtime_ns
    code, out_json, _ = run_cli(["batch", str(tree), "-o", str(out), "--model", str(model_file),
                                 "--json-progress"], capsys)
    events = [json.loads(line) for line in out_json.splitlines()]
    assert code == 0 and events[-1]["event"] == "summary"
    assert events[-1]["skipped"] == 4 and events[-1]["done"] == 0
    assert (out / "a_x4.png").stat().st_mtime_ns == stamp
    # --overwrite redoes them
    code, out_json, _ = run_cli(["batch", str(tree), "-o", str(out), "--model", str(model_file),
                                 "--json-progress", "--overwrite", "--tile", "0"], capsys)
    events = [json.loads(line) for line in out_json.splitlines()]
    assert events[-1]["done"] == 4
    kinds = {e["event"] for e in events}
    assert {"start", "file_start", "progress", "file_end", "summary"} <= kinds


def test_batch_naming_and_ext(tree, tmp_path, model_file, capsys):
    out = tmp_path / "named"
    code, _, err = run_cli(["batch", str(tree), "-o", str(out), "--model", str(model_file), "--name", "{stem}",
                            "--ext", "png", "--quiet"], capsys)
    assert code == 0, err
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert made == ["a.png", "b.png", "sub/c.png", "sub/deeper/d.png"]
    assert err == ""  # --quiet
    code, _, err = run_cli(["batch", str(tree), "-o", str(tmp_path / "n2"), "--model", str(model_file),
                            "--name", "{stem}_{ext}_x{scale}", "--outscale", "2", "--quiet"], capsys)
    assert code == 0
    assert (tmp_path / "n2" / "a_png_x2.png").is_file()
    with Image.open(tmp_path / "n2" / "a_png_x2.png") as im:
        assert im.size == (24, 20)
    code, _, err = run_cli(["batch", str(tree), "-o", str(tmp_path / "n3"), "--model", str(model_file),
                            "--name", "{oops}"], capsys)
    assert code == 2 and "unknown field" in err


def test_batch_sharding(tree, tmp_path, model_file, capsys, monkeypatch):
    out = tmp_path / "sharded"
    seen = []
    for k in (1, 2):
        code, out_json, _ = run_cli(["batch", str(tree), "-o", str(out), "--model", str(model_file),
                                     "--shard", f"{k}/2", "--json-progress"], capsys)
        assert code == 0
        done = [e["input"] for e in map(json.loads, out_json.splitlines()) if e["event"] == "file_end"]
        assert len(done) == 2
        seen += done
    assert len(set(seen)) == 4
    assert len([p for p in out.rglob("*") if p.is_file()]) == 4
    # torchrun environment
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    code, out_json, _ = run_cli(["batch", str(tree), "-o", str(tmp_path / "tr"), "--model", str(model_file),
                                 "--json-progress"], capsys)
    ends = [e for e in map(json.loads, out_json.splitlines()) if e["event"] == "file_end"]
    assert code == 0 and [Path(e["input"]).name for e in ends] == ["b.jpg"]


def test_batch_failure_exit_code_and_rest_goes_on(tree, tmp_path, model_file, capsys):
    (tree / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tree / "empty.jpg").write_bytes(b"")
    data = (tree / "a.png").read_bytes()
    (tree / "sub" / "cut.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, _, err = run_cli(["batch", str(tree), "-o", str(out), "--model", str(model_file)], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and all("Traceback" not in e for e in errors)
    assert "Traceback" not in err
    assert len([p for p in out.rglob("*") if p.is_file()]) == 4  # the good ones were done
    assert not [p for p in out.rglob("*") if ".part-" in p.name]


def test_batch_debug_shows_traceback(tree, tmp_path, model_file, capsys, monkeypatch):
    (tree / "broken.png").write_bytes(b"garbage")
    monkeypatch.delenv("TADSR_DEBUG", raising=False)
    code, _, err = run_cli(["--debug", "batch", str(tree), "-o", str(tmp_path / "o"), "--model", str(model_file),
                            "--quiet"], capsys)
    assert code == 1 and "Traceback" in err
    os.environ.pop("TADSR_DEBUG", None)


def test_batch_interrupted_run_resumes(tree, tmp_path, model_file, capsys, monkeypatch):
    from tadsr_cli.pipeline.upscaler import Upscaler

    out = tmp_path / "out"
    real = Upscaler.upscale
    calls = []

    def interrupting(self, rgb, progress=None):
        calls.append(1)
        if len(calls) == 2:  # SIGTERM while the second file is being upscaled (its temp output exists)
            assert [p for p in out.rglob("*") if ".part-" in p.name]
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, rgb, progress)

    monkeypatch.setattr(Upscaler, "upscale", interrupting)
    code, _, err = run_cli(["batch", str(tree), "-o", str(out), "--model", str(model_file)], capsys)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a_x4.png"]  # no partial output
    monkeypatch.setattr(Upscaler, "upscale", real)
    code, out_json, _ = run_cli(["batch", str(tree), "-o", str(out), "--model", str(model_file),
                                 "--json-progress"], capsys)
    last = json.loads(out_json.splitlines()[-1])
    assert code == 0 and last["skipped"] == 1 and last["done"] == 3


def test_batch_bad_folder_and_output(tmp_path, model_file, capsys):
    code, _, err = run_cli(["batch", str(tmp_path / "nope"), "-o", str(tmp_path / "o"), "--model",
                            str(model_file)], capsys)
    assert code == 2 and "not a folder" in " ".join(err.split())
    img(tmp_path / "in" / "a.png")
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "file" / "sub"), "--model",
                            str(model_file)], capsys)
    assert code == 2 and "cannot create the output folder" in " ".join(err.split())
    code, _, err = run_cli(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model",
                            str(tmp_path / "missing.safetensors")], capsys)
    assert code == 2 and "error:" in err
