"""`--backend auto`: the fastest of torch, OpenVINO and ONNX Runtime on the CPU; the verdict is cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tadsr_cli.engines import auto, create_engine
from tadsr_cli.models.presets import tiny_test_config
from tadsr_cli.models.sr_model import DiffusionSR
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model() -> DiffusionSR:
    torch.manual_seed(0)
    m = DiffusionSR(tiny_test_config()).eval()
    with torch.no_grad():
        m.denoiser.out[-1].weight.normal_(0, 0.02)  # not the zero-initialised residual head: the net matters
    return m


def fake_timer(seconds: dict[str, float]):
    def timer(engines):
        assert list(engines)[0] == "torch"
        return {name: seconds[name] for name in engines}, 64
    return timer


def test_candidates():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert auto.graph_candidate(cpu, "fp32", 1) and auto.graph_candidate(cpu, "bf16", 1)
    assert not auto.graph_candidate(cpu, "fp16", 1)
    assert not auto.graph_candidate(cpu, "fp32", 15)  # teacher sampling: torch only
    assert not auto.graph_candidate(cuda, "fp32", 1)


@pytest.mark.parametrize("faster", ["onnx", "torch", "openvino"])
def test_the_faster_backend_is_chosen_and_the_verdict_cached(model, tmp_path, monkeypatch, faster):
    if faster == "openvino":
        pytest.importorskip("openvino")
    times = {"onnx": 2.0, "torch": 2.0, "openvino": 2.0, faster: 1.0}
    monkeypatch.setattr(auto, "compare", fake_timer(times))
    cache = tmp_path / "cache"
    eng = create_engine("auto", model, device="cpu", precision="fp32", cache_dir=cache)
    assert eng.name == faster
    verdicts = list(cache.glob("*.speed.json"))
    assert len(verdicts) == 1 and json.loads(verdicts[0].read_text())["verdicts"][0]["choice"] == faster

    def no_timing(*_args, **_kwargs):
        raise AssertionError("the cached verdict should have been used")

    monkeypatch.setattr(auto, "compare", no_timing)
    assert create_engine("auto", model, device="cpu", precision="fp32", cache_dir=cache).name == faster
    # another precision (or thread count) is another question: measured again, kept beside the first verdict
    monkeypatch.setattr(auto, "compare", fake_timer(times))
    create_engine("auto", model, device="cpu", precision="bf16", cache_dir=cache)
    assert len(list(cache.glob("*.speed.json"))) == 1  # one file per graph
    assert len(json.loads(verdicts[0].read_text())["verdicts"]) == 2
    monkeypatch.setattr(auto, "compare", no_timing)
    for precision in ("fp32", "bf16"):  # both answered from the cache
        create_engine("auto", model, device="cpu", precision=precision, cache_dir=cache)


def test_teacher_sampling_and_fp16_stay_on_torch(model, tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "compare", fake_timer({"onnx": 0.0, "openvino": 0.0, "torch": 9.0}))
    eng = create_engine("auto", model, device="cpu", precision="fp32", steps=15, cache_dir=tmp_path)
    assert eng.name == "torch" and eng.steps == 15
    assert not list(tmp_path.glob("*.onnx"))  # nothing exported for a configuration ONNX cannot run


def test_choice_needs_a_clear_win_over_torch_and_prefers_openvino_on_a_tie():
    assert auto.choose({"torch": 1.0, "onnx": 0.97}) == "torch"  # within the 5 % margin: torch, the reference
    assert auto.choose({"torch": 1.0, "onnx": 0.9, "openvino": 0.9}) == "openvino"
    assert auto.choose({"torch": 1.0, "onnx": 0.5, "openvino": 0.6}) == "onnx"


def test_auto_output_equals_torch(model, tmp_path):
    img = np.random.default_rng(0).random((40, 56, 3), dtype=np.float32)
    ref = Upscaler(create_engine("torch", model, device="cpu"), TileOptions(tile=0)).upscale(img)
    out = Upscaler(create_engine("auto", model, device="cpu", cache_dir=tmp_path), TileOptions()).upscale(img)
    mse = float(np.mean((out.astype(np.float64) - ref) ** 2))
    assert 10 * np.log10(1.0 / max(mse, 1e-20)) >= 40.0
