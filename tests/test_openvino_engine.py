"""`--backend openvino`: agreement with torch, the IR export, the compile cache, and falling back to torch (one
warning line, no traceback) wherever OpenVINO cannot work."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tadsr_cli.base.errors import EngineUnavailableError
from tadsr_cli.engines import create_engine, openvino_engine
from tadsr_cli.models.checkpoints import save_model
from tadsr_cli.models.presets import tiny_test_config
from tadsr_cli.models.sr_model import DiffusionSR
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler
from tests.test_batch import img, run_cli

try:
    ov = openvino_engine.import_openvino()
except EngineUnavailableError:
    pytest.skip("OpenVINO is not installed", allow_module_level=True)


def tiny_model() -> DiffusionSR:
    torch.manual_seed(0)
    m = DiffusionSR(tiny_test_config()).eval()
    with torch.no_grad():
        m.denoiser.out[-1].weight.normal_(0, 0.02)  # not the zero-initialised residual head: the net matters
    return m


@pytest.fixture
def model_file(tmp_path) -> Path:
    """A fresh model file per test: nothing exported or compiled for it yet."""
    path = tmp_path / "model" / "tiny.safetensors"
    path.parent.mkdir()
    save_model(tiny_model(), path)
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-20))


def test_shipped_default_agrees_with_torch_fp32(tmp_path):
    """What users run: the embedded default at the precision `auto` resolves to (bf16 on an AMX CPU)."""
    from tadsr_cli.models.model_cache import resolve_model, resolve_model_path
    from tadsr_cli.pipeline.settings import resolve_precision

    model = resolve_model(str(resolve_model_path(None)))
    image = np.asarray(Image.open(Path(__file__).parents[1] / "tadsr_cli/assets/sample.png").convert("RGB"))
    image = image[:96, :128].astype(np.float32) / 255
    precision = resolve_precision("auto", torch.device("cpu"), "openvino", 1)
    ref = Upscaler(create_engine("torch", model, device="cpu", precision="fp32"), TileOptions(tile=0)).upscale(image)
    for prec in {precision, "fp32"}:
        eng = create_engine("openvino", model, device="cpu", precision=prec, cache_dir=tmp_path)
        out = Upscaler(eng, TileOptions(tile=0)).upscale(image)
        # measured 61 dB in bf16 (network output), 90+ dB in f32
        assert psnr(out, ref) >= (50.0 if prec == "bf16" else 70.0), prec


def test_tiles_batches_and_sizes_on_one_compiled_model(tmp_path):
    model = tiny_model()
    eng = create_engine("openvino", model, device="cpu", precision="fp32", cache_dir=tmp_path)
    ref = create_engine("torch", model, device="cpu", precision="fp32")
    for b, h, w in [(1, 16, 32), (3, 32, 32), (2, 16, 48)]:
        gen = torch.Generator().manual_seed(b * h * w)
        lq = torch.rand(b, 3, h, w, generator=gen) * 2 - 1
        noise = torch.randn(b, model.latent_channels, h, w, generator=gen)
        out = eng.run(lq, noise)
        assert out.shape == (b, 3, 4 * h, 4 * w) and out.dtype == torch.float32
        assert float((out - ref.run(lq, noise)).abs().max()) < 1e-3


def test_output_does_not_depend_on_what_ran_before(tmp_path):
    """Same input, same pixels, whatever sizes the run saw first (a per-shape compile would break this)."""
    model = tiny_model()
    eng = create_engine("openvino", model, device="cpu", precision="fp32", cache_dir=tmp_path)
    lq = torch.rand(2, 3, 16, 32) * 2 - 1
    noise = torch.randn(2, model.latent_channels, 16, 32)
    first = eng.run(lq, noise)
    for _ in range(4):
        eng.run(lq, noise)
        eng.run(lq[:1, :, :, :16], noise[:1, :, :, :16])
    assert torch.equal(eng.run(lq, noise), first)


def test_compiled_model_is_cached_beside_the_export(tmp_path):
    model = tiny_model()
    first = create_engine("openvino", model, device="cpu", precision="fp32", cache_dir=tmp_path)
    cache = first.onnx_path.parent / openvino_engine.CACHE_SUBDIR
    assert first.cache_folder == cache and any(cache.iterdir())
    files = sorted(p.name for p in cache.iterdir())
    create_engine("openvino", model, device="cpu", precision="fp32", cache_dir=tmp_path)
    assert sorted(p.name for p in cache.iterdir()) == files  # the second compile read the first one's blob


def test_unwritable_cache_folder_only_turns_the_cache_off(tmp_path, caplog):
    model = tiny_model()
    graph = create_engine("onnx", model, device="cpu", cache_dir=tmp_path).onnx_path
    (graph.parent / openvino_engine.CACHE_SUBDIR).write_text("a file where the cache folder would go")
    eng = create_engine("openvino", model, device="cpu", precision="fp32", cache_dir=tmp_path)
    assert eng.cache_folder is None
    assert "compile cache is off" in caplog.text
    lq = torch.zeros(1, 3, 16, 16)
    assert torch.isfinite(eng.run(lq, torch.zeros(1, model.latent_channels, 16, 16))).all()


def test_export_writes_openvino_ir(tmp_path, model_file, capsys):
    xml = tmp_path / "out" / "tiny.xml"
    code, _, err = run_cli(["export", "--model", str(model_file), "--format", "openvino", "-o", str(xml)], capsys)
    assert code == 0, err
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert not [p for p in xml.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    compiled = openvino_engine.shared_core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    model = tiny_model()
    lq = torch.rand(1, 3, 16, 32) * 2 - 1
    noise = torch.randn(1, model.latent_channels, 16, 32)
    hr = compiled({"lq": lq.numpy(), "noise": noise.numpy()})[compiled.output("hr")]
    ref = create_engine("torch", model, device="cpu", precision="fp32").run(lq, noise)
    assert float(np.abs(hr - ref.numpy()).max()) < 1e-3
    code, _, err = run_cli(["export", "--model", str(model_file), "--format", "openvino", "-o",
                            str(tmp_path / "x.onnx")], capsys)
    assert code != 0 and ".xml" in err and "Traceback" not in err


# ---- failures: each falls back to torch with one warning line, writes the output, no traceback ------------------
def upscale_falls_back(tmp_path: Path, model_file: Path, capsys, backend: str, *extra: str) -> str:
    src = img(tmp_path / "in.png", 16, 12)
    dst = tmp_path / "out.png"
    code, _, err = run_cli(["upscale", str(src), "--model", str(model_file), "--backend", backend, "-o", str(dst),
                            *extra], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    with Image.open(dst) as im:
        assert im.size == (64, 48)
    return err


def warning_lines(caplog, word: str) -> list[str]:
    """The warnings logged (the CLI prints each as one line on stderr; under pytest they go to caplog)."""
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and word in r.getMessage()]


def test_import_leaves_openvino_telemetry_off():
    # this module imported OpenVINO through import_openvino (as every tadsr path does): no telemetry module loaded
    assert ov is sys.modules["openvino"]
    assert not [m for m in sys.modules if m.startswith("openvino_telemetry") and sys.modules[m] is not None]
    assert sys.modules.get("openvino_telemetry", 0) is not None  # and nothing left blocked for other code


def test_not_installed(tmp_path, model_file, capsys, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    upscale_falls_back(tmp_path, model_file, capsys, "openvino")
    assert len(warning_lines(caplog, "pip install openvino")) == 1


def test_cpu_without_native_bf16(tmp_path, model_file, capsys, caplog, monkeypatch):
    monkeypatch.setattr(openvino_engine, "cpu_has_native_bf16", lambda core=None: False)
    upscale_falls_back(tmp_path, model_file, capsys, "openvino", "--precision", "bf16")
    assert len(warning_lines(caplog, "no native bf16")) == 1


def test_compile_error(tmp_path, model_file, capsys, caplog, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp: unsupported operation\nmore detail")

    monkeypatch.setattr(ov.Core, "compile_model", broken)
    for backend in ("openvino", "auto"):
        caplog.clear()
        upscale_falls_back(tmp_path, model_file, capsys, backend, "--overwrite")
        lines = warning_lines(caplog, "could not compile")
        assert len(lines) == 1 and "more detail" not in lines[0], caplog.text


@pytest.mark.parametrize("backend", ["openvino", "auto"])
def test_disk_full_while_exporting_the_graph(tmp_path, model_file, capsys, caplog, monkeypatch, backend):
    import onnx

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", disk_full)
    upscale_falls_back(tmp_path, model_file, capsys, backend)
    assert len(warning_lines(caplog, "No space left on device")) == 1, caplog.text
    engines = model_file.parent / "tadsr-engines"
    assert not [p for p in engines.rglob("*") if p.is_file()]  # no half-written graph left behind
