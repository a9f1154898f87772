"""benchmarks/bench_gpu.py runs end to end on the CPU with a tiny model (its GPU run is then one command away)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_reports_every_variant(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "gpu.json"
    report = bench.main(["--device", "cpu", "--models", "tiny", "--size", "64x48", "--frames", "2",
                         "--precisions", "fp32,bf16", "-o", str(out)])
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out) == report
    assert report["in_size"] == [64, 48] and report["out_size"] == [256, 192]
    rows = report["models"]["tiny"]
    assert rows["torch_fp32"]["fps"] > 0 and rows["torch_fp32"]["tile"] == 0  # auto: the whole frame fits
    assert rows["torch_bf16"]["fps"] > 0 and rows["torch_bf16"]["psnr_vs_torch_fp32_db"] > 30
    trt = rows["tensorrt_fp16"]
    assert "skipped" in trt or trt["fps"] > 0  # no TensorRT/GPU here: reported, not fatal


def test_cuda_requested_without_a_gpu_says_how_to_smoke_test():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="--device cpu"):
        load_script().main([])
