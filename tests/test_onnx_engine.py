"""ONNX export + ONNX Runtime engine: agreement with torch, dynamic shapes, caches, errors, CLI (tiny models, CPU)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError, NumericalError  # noqa: E402
from tadsr_cli.engines import create_engine  # noqa: E402
from tadsr_cli.engines.onnx_engine import OnnxEngine  # noqa: E402
from tadsr_cli.engines.onnx_export import export_onnx, read_metadata  # noqa: E402
from tadsr_cli.models.checkpoints import save_model  # noqa: E402
from tadsr_cli.models.presets import tiny_test_config, tiny_vq_test_config  # noqa: E402
from tadsr_cli.models.sr_model import DiffusionSR  # noqa: E402
from tests.test_batch import img, run_cli  # noqa: E402

TOL = 1e-3


def _model(cfg) -> DiffusionSR:
    torch.manual_seed(0)
    model = DiffusionSR(cfg)
    with torch.no_grad():  # residual models start as plain bicubic: make the denoiser matter
        model.denoiser.out[-1].weight.normal_(0, 0.02)
    return model.eval()


@pytest.fixture(scope="module")
def pu_file(tmp_path_factory) -> Path:
    return save_model(_model(tiny_test_config()), tmp_path_factory.mktemp("pu") / "tiny-pu.safetensors")


@pytest.fixture(scope="module")
def vq_file(tmp_path_factory) -> Path:
    return save_model(_model(tiny_vq_test_config()), tmp_path_factory.mktemp("vq") / "tiny-vq.safetensors")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One engine cache for the module: graphs exported by one test are reused by the next (as in real use)."""
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TADSR_HOME", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def _home(home):
    return home


@pytest.fixture(scope="module")
def vq_onnx(vq_file, tmp_path_factory, home):
    """The tiny VQ model exported once (dynamic), verified at two sizes."""
    model = _load(vq_file)
    m = model.lq_multiple
    out = tmp_path_factory.mktemp("vqx") / "vq.onnx"
    report = export_onnx(model, out, tile=2 * m, dynamic=True, check_sizes=[(1, 2 * m, 2 * m), (2, m, 3 * m)])
    return out, report


def _load(path: Path) -> DiffusionSR:
    from tadsr_cli.models.checkpoints import load_model_file

    return load_model_file(path)


def _inputs(model, b: int, h: int, w: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lq = torch.rand(b, 3, h, w, generator=gen) * 2 - 1
    noise = torch.randn(b, model.latent_channels, h, w, generator=gen)
    return lq, noise


def _ort_run(path: Path, lq: torch.Tensor, noise: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["hr"], {"lq": lq.numpy(), "noise": noise.numpy()})[0]


@pytest.mark.parametrize("kind", ["pu", "vq"])
def test_dynamic_export_matches_torch_at_two_sizes(kind, pu_file, vq_file, vq_onnx, tmp_path):
    model = _load(pu_file if kind == "pu" else vq_file)
    m = model.lq_multiple
    if kind == "vq":
        out, report = vq_onnx
    else:
        out = tmp_path / "pu.onnx"
        report = export_onnx(model, out, tile=2 * m, dynamic=True, check_sizes=[(1, 2 * m, 2 * m), (2, m, 3 * m)])
    assert report.max_abs_error is not None and report.max_abs_error <= TOL
    assert [(c["batch"], c["height"], c["width"]) for c in report.checked] == [(1, 2 * m, 2 * m), (2, m, 3 * m)]
    meta = read_metadata(out)
    assert meta["lq_multiple"] == str(m) and meta["scale"] == "4" and meta["shape_mode"] == "dynamic"
    assert meta["latent_channels"] == str(model.latent_channels)
    # a third size, not checked by the export itself, through a fresh session
    lq, noise = _inputs(model, 1, 3 * m, 2 * m, seed=5)
    with torch.inference_mode():
        ref = model.one_step(lq, noise).numpy()
    got = _ort_run(out, lq, noise)
    assert got.shape == (1, 3, 12 * m, 8 * m)
    assert float(np.abs(got - ref).max()) <= TOL


def test_graph_structure_bicubic_as_conv_and_named_quantizer(vq_onnx):
    import onnx

    out, _ = vq_onnx
    graph = onnx.load(str(out)).graph
    ops = [n.op_type for n in graph.node]
    # no cubic Resize (slow in ONNX Runtime): edge Pad + depthwise Conv + DepthToSpace instead
    assert not any(n.op_type == "Resize" and any(a.name == "mode" and a.s == b"cubic" for a in n.attribute)
                   for n in graph.node)
    pads = [n for n in graph.node if n.op_type == "Pad" and any(a.name == "mode" and a.s == b"edge"
                                                                 for a in n.attribute)]
    assert pads and pads[0].name.startswith("/upsample/")
    assert "DepthToSpace" in ops
    assert any(n.op_type == "ArgMin" and n.name.startswith("/quantizer/") for n in graph.node)
    assert [i.name for i in graph.input] == ["lq", "noise"]
    assert [o.name for o in graph.output] == ["hr", "latent"]


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 3, 1, 1), (1, 3, 16, 24)])
def test_bicubic_as_conv_equals_torch_bicubic(shape):
    import torch.nn.functional as F

    from tadsr_cli.engines.onnx_export import BicubicUpsample

    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert float((BicubicUpsample(4)(x) - ref).abs().max()) < 1e-5


@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_upsampler_equals_nearest_then_conv(channels_last):
    from diffusers.models.upsampling import Upsample2D

    from tadsr_cli.engines.onnx_export import SubpixelUpsampleConv, subpixel_upsamplers
    from tadsr_cli.models.unet_swin import Upsample

    torch.manual_seed(0)
    root = torch.nn.Sequential(Upsample2D(8, use_conv=True), Upsample(8, True, 4), Upsample(4, False)).eval()
    x = torch.randn(2, 8, 5, 6)
    if channels_last:
        root = root.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = root(x)
        with subpixel_upsamplers(root) as n:
            assert n == 2 and isinstance(root[0], SubpixelUpsampleConv) and not isinstance(root[2],
                                                                                           SubpixelUpsampleConv)
            out = root(x)
    assert isinstance(root[0], Upsample2D)  # restored
    assert out.shape == ref.shape == (2, 4, 40, 48)
    assert float((out - ref).abs().max()) < 1e-5


def test_static_export_and_size_check(pu_file):
    model = _load(pu_file)
    m = model.lq_multiple
    eng = OnnxEngine(model, device="cpu", model_path=pu_file, dynamic=False, tile=m, verify=False)
    assert eng.static_size == m and "static" in eng.onnx_path.name
    lq, noise = _inputs(model, 2, m, m)
    with torch.inference_mode():
        ref = model.one_step(lq, noise)
    assert float((eng.run(lq, noise) - ref).abs().max()) <= TOL
    with pytest.raises(ConfigError, match="static"):
        eng.run(*_inputs(model, 1, 2 * m, m))
    with pytest.raises(ConfigError, match="multiple"):
        eng.run(*_inputs(model, 1, m + 1, m))


def test_engine_matches_torch_engine_and_cache_is_reused(pu_file, tmp_path, monkeypatch):
    model = _load(pu_file)
    eng = create_engine("onnx", model, device="cpu", model_path=pu_file)
    assert not eng.reused_cache and eng.export_report.max_abs_error <= TOL
    assert eng.onnx_path.parent == pu_file.parent / "tadsr-engines"
    torch_eng = create_engine("torch", _load(pu_file), device="cpu")
    for b, h, w in [(2, 32, 32), (1, 16, 48)]:
        lq, noise = _inputs(model, b, h, w, seed=h + w)
        assert float((eng.run(lq, noise) - torch_eng.run(lq, noise)).abs().max()) <= TOL

    # second engine: no export, same file untouched
    import tadsr_cli.engines.onnx_engine as onnx_engine

    mtime = eng.onnx_path.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(onnx_engine, "export_onnx", lambda *a, **k: calls.append(1))
    again = create_engine("onnx", _load(pu_file), device="cpu", model_path=pu_file, seed=3)
    assert again.reused_cache and again.export_report is None and calls == []
    assert again.onnx_path == eng.onnx_path and eng.onnx_path.stat().st_mtime_ns == mtime


def test_cache_without_model_file_or_writable_folder(pu_file, home, monkeypatch):
    import tadsr_cli.engines.cache as cache

    model = _load(pu_file)
    first = create_engine("onnx", model, device="cpu", verify=False)  # no path: content hash, in the cache dir
    assert first.onnx_path.parent == home / "engines"
    second = create_engine("onnx", _load(pu_file), device="cpu")
    assert second.reused_cache and second.onnx_path == first.onnx_path
    # a model folder we cannot write to: the cache dir instead
    monkeypatch.setattr(cache.os, "access", lambda *a, **k: False)
    assert cache.cache_root(pu_file) == home / "engines"


def test_options_and_errors(pu_file):
    model = _load(pu_file)
    with pytest.raises(EngineUnavailableError, match="bf16"):
        create_engine("onnx", model, device="cpu", precision="bf16")
    with pytest.raises(EngineUnavailableError, match="fp16"):
        create_engine("onnx", model, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="one-step"):
        create_engine("onnx", model, device="cpu", steps=15)
    with pytest.raises(ConfigError, match="unknown option"):
        create_engine("onnx", model, device="cpu", bogus=1)
    with pytest.raises(EngineUnavailableError, match="MPS"):
        create_engine("onnx", model, device="mps")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(EngineUnavailableError, match="onnxruntime-gpu"):
            create_engine("onnx", model, device="cuda")


def test_reduced_precision_nan_tiles_fall_back_to_fp32(pu_file, monkeypatch):
    model = _load(pu_file)
    eng = OnnxEngine(model, device="cpu", model_path=pu_file)
    lq, noise = _inputs(model, 3, 16, 16)
    clean = eng.run(lq, noise)
    with pytest.raises(NumericalError):  # fp32 itself producing NaN is an error
        _poison(monkeypatch, eng, lambda: eng.run(lq, noise))
    eng.precision = "fp16"  # pretend the session is a reduced-precision one; fp32 session for the fallback
    eng._fp32_session = None
    with pytest.warns(RuntimeWarning, match="recomputing"):
        out = _poison(monkeypatch, eng, lambda: eng.run(lq, noise))
    assert torch.isfinite(out).all() and float((out - clean).abs().max()) <= 1e-5


def _poison(monkeypatch, eng, fn):
    real = OnnxEngine._call
    state = {"n": 0}

    def call(session, lq, noise):
        hr, z = real(session, lq, noise)
        state["n"] += 1
        if state["n"] == 1:  # first call of the run: tile 1 has an Inf latent
            z = z.copy()
            z[1, 0, 0, 0] = np.inf
        return hr, z

    with monkeypatch.context() as mp:
        mp.setattr(OnnxEngine, "_call", staticmethod(call))
        return fn()


def test_export_cli(pu_file, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    code, stdout, err = run_cli(["export", "--model", str(pu_file), "--format", "onnx", "--tile", "16",
                                 "-o", str(out), "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["path"] == str(out) and out.is_file()
    assert res["max_abs_error"] <= TOL and res["shape_mode"] == "dynamic" and len(res["checked"]) == 2
    # into the cache next to the model (no -o), then found again
    code, _, err = run_cli(["export", "--model", str(pu_file)], capsys)
    assert code == 0 and "ONNX graph" in err
    code, _, err = run_cli(["export", "--model", str(pu_file)], capsys)
    assert code == 0 and "cached export found" in err
    code, _, err = run_cli(["export", "--model", str(pu_file), "--tile", "17", "-o", str(out)], capsys)
    assert code == 2 and "multiple" in err


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_upscale_backend_onnx_equals_torch(pu_file, tmp_path, capsys):
    if not Path(__file__).parents[1].joinpath("tadsr_cli", "commands", "upscale.py").is_file():
        pytest.skip("upscale command not present")
    src = img(tmp_path / "in.png", 40, 28)
    outs = {}
    for backend in ("torch", "onnx"):
        dst = tmp_path / f"out_{backend}.png"
        code, _, err = run_cli(["upscale", str(src), "--model", str(pu_file), "--backend", backend, "--tile", "32",
                                "--tile-overlap", "8", "--precision", "fp32", "-o", str(dst), "-q"], capsys)
        assert code == 0, err
        outs[backend] = _read(dst)
    assert outs["torch"].shape == outs["onnx"].shape == (112, 160, 3)
    assert int(np.abs(outs["torch"] - outs["onnx"]).max()) <= 1  # 8-bit rounding of < 1e-3 differences


def test_upscale_video_backend_onnx_equals_torch(pu_file, tmp_path, capsys):
    av = pytest.importorskip("av")
    from tests.test_upscale_cli import _make_video

    src = tmp_path / "clip.mp4"
    _make_video(src, frames=2, w=32, h=24)
    frames = {}
    for backend in ("torch", "onnx"):
        dst = tmp_path / f"clip_{backend}.mkv"
        code, _, err = run_cli(["upscale", str(src), "--model", str(pu_file), "--backend", backend,
                                "--precision", "fp32", "--crf", "0", "--pix-fmt", "yuv444p", "-o", str(dst), "-q"],
                               capsys)
        assert code == 0, err
        with av.open(str(dst)) as c:
            frames[backend] = [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(video=0)]
    assert len(frames["torch"]) == len(frames["onnx"]) == 2
    for a, b in zip(frames["torch"], frames["onnx"], strict=True):
        assert a.shape == (96, 128, 3)
        assert int(np.abs(a - b).max()) <= 2 and float(np.abs(a - b).mean()) < 0.05


def test_bench_json_small(tmp_path, capsys, monkeypatch):
    import tadsr_cli.engines.bench as bench

    monkeypatch.setattr(bench, "load_default_model", lambda: (_model(tiny_test_config()), "tiny"))
    code, stdout, err = run_cli(["bench", "--models", "default", "--backends", "torch,onnx", "--precisions",
                                 "fp32", "--size", "16", "--repeats", "1", "-q"], capsys)
    assert code == 0, err
    with warnings.catch_warnings():
        report = json.loads(stdout)
    rows = {r["label"]: r for r in report["results"]["default"]["variants"]}
    assert set(rows) == {"torch-fp32", "onnx-fp32"}
    assert rows["onnx-fp32"]["max_abs_err_vs_torch_fp32"] <= TOL
    assert rows["torch-fp32"]["throughput_mp_s"] > 0 and rows["onnx-fp32"]["latency_s_per_tile"] > 0
    assert report["summary"]["default_onnx_vs_torch_eager"]["wall"] > 0
    assert report["results"]["default"]["input"]["hr"] == [1, 3, 64, 64]
