"""TensorRT backend: the pure planning logic (profiles, cache keys/lookup, tiles, precision) and the clear error
when TensorRT is missing. TensorRT itself cannot be installed on CI; nothing here needs it or a GPU."""

from __future__ import annotations

import sys
import threading

import pytest

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError
from tadsr_cli.engines import tensorrt_plan as plan
from tadsr_cli.engines.tensorrt_plan import EngineRecord, EngineSpec, ShapeProfile


def spec(profile: ShapeProfile, **kw) -> EngineSpec:
    base = dict(model_sha256="ab" * 32, profile=profile, precision="fp16", trt_version="10.3.0",
                gpu_name="NVIDIA H100 80GB HBM3", opset=17)
    base.update(kw)
    return EngineSpec(**base)


def test_bucket_side():
    assert [plan.bucket_side(s, 16) for s in (1, 16, 64, 65, 128, 130, 200, 1024, 1100)] == [
        64, 64, 64, 128, 128, 192, 256, 1024, 1536]
    assert plan.bucket_side(64, 64) == 64 and plan.bucket_side(100, 64) == 128
    assert plan.bucket_side(2000, 64) == 2048
    assert all(plan.bucket_side(s, 48) % 48 == 0 for s in (10, 100, 700, 3000))


def test_plan_profile_covers_the_tiles_in_use():
    p = plan.plan_profile(tile=128, batch=4, multiple=64)
    assert p == ShapeProfile((1, 64, 64), (4, 128, 128), (4, 128, 128))
    assert p.contains(4, 128, 128) and p.contains(1, 64, 128) and not p.contains(5, 128, 128)
    assert not p.contains(1, 192, 128)
    # a tile that is not a bucket: opt is the tile, max the bucket above
    q = plan.plan_profile(tile=100, batch=2, multiple=16)
    assert q.opt == (2, 112, 112) and q.max == (2, 128, 128) and q.min == (1, 16, 16)
    q.validate(16)
    # whole image: batch 1, opt = padded image, max = buckets
    w = plan.plan_profile(tile=0, batch=4, multiple=64, image_hw=(270, 480))
    assert w.opt == (1, 320, 512) and w.max == (1, 384, 512)
    with pytest.raises(ConfigError):
        plan.plan_profile(tile=0, batch=1, multiple=64)
    with pytest.raises(ConfigError):
        plan.plan_profile(tile=64, batch=0, multiple=64)
    with pytest.raises(ConfigError):
        ShapeProfile((1, 64, 64), (4, 32, 64), (4, 128, 128))  # opt < min
    with pytest.raises(ConfigError):
        ShapeProfile((1, 48, 48), (1, 48, 48), (1, 48, 48)).validate(64)


def test_input_shapes_for_set_shape():
    p = plan.plan_profile(tile=128, batch=4, multiple=64)
    shapes = p.input_shapes(latent_channels=3)
    assert shapes["lq"] == ((1, 3, 64, 64), (4, 3, 128, 128), (4, 3, 128, 128))
    assert shapes["noise"] == ((1, 3, 64, 64), (4, 3, 128, 128), (4, 3, 128, 128))
    assert plan.plan_profile(64, 1, 16).input_shapes(48)["noise"][1] == (1, 48, 64, 64)
    assert ShapeProfile.from_dict(p.as_dict()) == p


def test_cache_key_depends_on_everything_but_the_image_size():
    p = plan.plan_profile(tile=128, batch=4, multiple=64)
    s = spec(p)
    assert s.key() == spec(plan.plan_profile(tile=128, batch=4, multiple=64)).key()  # stable
    for change in ({"precision": "bf16"}, {"trt_version": "10.4.0"}, {"gpu_name": "NVIDIA A100"},
                   {"model_sha256": "cd" * 32}, {"opset": 18}, {"graph_version": "2"}):
        assert spec(p, **change).key() != s.key(), change
    assert spec(plan.plan_profile(tile=256, batch=4, multiple=64)).key() != s.key()
    name = s.file_name("my model")
    assert name.endswith(".plan") and "fp16" in name and "NVIDIA-H100-80GB-HBM3" in name and " " not in name
    assert "trt10.3.0" in name and p.tag() in name
    assert EngineSpec.from_dict(s.as_dict()) == s


def test_choose_engine_reuses_any_covering_profile(tmp_path):
    small = plan.plan_profile(tile=128, batch=4, multiple=64)
    big = plan.plan_profile(tile=256, batch=2, multiple=64)
    records = [EngineRecord(tmp_path / "big.plan", spec(big)), EngineRecord(tmp_path / "small.plan", spec(small))]
    want = spec(plan.profile_for_shape(4, 128, 128, 64))
    # the exact-opt engine wins
    assert plan.choose_engine(records, want, 4, 128, 128).path.name == "small.plan"
    # a new resolution inside a profile: reused, never rebuilt
    assert plan.choose_engine(records, want, 1, 64, 128).path.name == "small.plan"
    assert plan.choose_engine(records, want, 2, 192, 256).path.name == "big.plan"
    # outside every profile, or another precision/GPU: nothing
    assert plan.choose_engine(records, want, 8, 128, 128) is None
    assert plan.choose_engine(records, spec(small, precision="fp32"), 4, 128, 128) is None
    assert plan.choose_engine(records, spec(small, gpu_name="NVIDIA L4"), 4, 128, 128) is None


def test_scan_engines_reads_sidecars(tmp_path):
    s = spec(plan.plan_profile(tile=128, batch=4, multiple=64))
    plan_file = tmp_path / s.file_name("m")
    plan_file.write_bytes(b"engine")
    plan.write_meta(plan_file, s)
    (tmp_path / "orphan.plan.json").write_text("{not json")
    (tmp_path / "nofile.plan.json").write_text('{"model_sha256": "x"}')
    records = plan.scan_engines(tmp_path)
    assert [r.path for r in records] == [plan_file] and records[0].spec == s
    assert plan.scan_engines(tmp_path / "missing") == []


def test_profile_for_an_unplanned_shape():
    p = plan.profile_for_shape(3, 80, 48, 16)
    assert p.opt == (3, 80, 48) and p.max == (3, 128, 128) and p.contains(1, 16, 16)


def test_tile_plan_for_a_profile():
    p = plan.plan_profile(tile=128, batch=4, multiple=64)
    assert plan.plan_tiles_for_profile(p, 1080, 1920, 64) == plan.TilePlan(tile=128, batch=4)
    assert plan.plan_tiles_for_profile(p, 100, 90, 64) == plan.TilePlan(tile=0, batch=1)  # fits one tile
    with pytest.raises(ConfigError, match="overlap"):
        plan.plan_tiles_for_profile(p, 1080, 1920, 64, overlap=128)


def test_precision_flags_and_fp32_layers():
    assert plan.precision_flags("fp32") == ()
    assert plan.precision_flags("fp16", (8, 0)) == ("FP16",)
    assert plan.precision_flags("bf16", (9, 0)) == ("BF16",)
    with pytest.raises(EngineUnavailableError, match="Ampere"):
        plan.precision_flags("bf16", (7, 5))
    with pytest.raises(ConfigError):
        plan.precision_flags("int8")
    assert plan.keep_fp32("/quantizer/ArgMin", "TOPK")
    assert plan.keep_fp32("/quantizer/Sub", "ELEMENTWISE")
    assert plan.keep_fp32("/model/denoiser/out/out.0/InstanceNormalization", "NORMALIZATION")
    assert not plan.keep_fp32("/model/denoiser/input_blocks.0/Conv", "CONVOLUTION")


def test_misc_helpers():
    assert plan.parse_version("10.3.0.26") == (10, 3, 0) and plan.parse_version("bogus") == (0,)
    assert plan.workspace_bytes(None) == 1 << 30
    assert plan.workspace_bytes(80 << 30) == 8 << 30 and plan.workspace_bytes(4 << 30) == 2 << 30
    assert plan.timing_cache_name("10.3.0", "NVIDIA H100") == "timing-trt10.3.0-NVIDIA-H100.cache"


def test_build_progress_bookkeeping():
    st = plan.BuildProgress()
    assert st.fraction() is None and st.describe().startswith("building")
    st.phase_start("Building engine", None, 4)
    st.phase_start("Tactic search", "Building engine", 10)
    assert st.step_complete("Tactic search", 4)
    st.step_complete("Building engine", 0)
    assert st.fraction() == pytest.approx(0.25)
    assert "Building engine 1/4 > Tactic search 5/10" in st.describe()
    st.phase_finish("Tactic search")
    assert "Tactic" not in st.describe()
    st.cancel()
    assert st.step_complete("Building engine", 1) is False  # asks TensorRT to stop

    def worker(i: int) -> None:  # TensorRT calls from its own threads
        st.phase_start(f"p{i}", None, 100)
        for k in range(100):
            st.step_complete(f"p{i}", k)
        st.phase_finish(f"p{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not n.startswith("p") for n in st.order)


def test_missing_tensorrt_is_a_clear_error(monkeypatch):
    from tadsr_cli.engines import create_engine
    from tadsr_cli.engines.tensorrt_engine import TRT_MISSING, import_tensorrt
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails, as without the package
    with pytest.raises(EngineUnavailableError) as info:
        import_tensorrt()
    assert str(info.value) == TRT_MISSING
    assert str(info.value) == (
        "TensorRT is not installed: pip install 'tadsr[tensorrt]' on a machine with an NVIDIA GPU")
    with pytest.raises(EngineUnavailableError, match="TensorRT is not installed"):
        create_engine("tensorrt", DiffusionSR(tiny_test_config()), device="cpu")


def test_placeholder_or_old_tensorrt(monkeypatch):
    import types

    from tadsr_cli.engines.tensorrt_engine import import_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # PyPI placeholder: no API
    with pytest.raises(EngineUnavailableError, match="not installed"):
        import_tensorrt()
    old = types.ModuleType("tensorrt")
    old.Builder, old.__version__ = object, "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(EngineUnavailableError, match="TensorRT 10"):
        import_tensorrt()


def test_export_tensorrt_cli_without_tensorrt(tmp_path, capsys, monkeypatch):
    from tadsr_cli.models.checkpoints import save_model
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR
    from tests.test_batch import run_cli

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    model = save_model(DiffusionSR(tiny_test_config()), tmp_path / "m.safetensors")
    code, _, err = run_cli(["export", "--model", str(model), "--format", "tensorrt"], capsys)
    assert code == 2
    assert ("TensorRT is not installed: pip install 'tadsr[tensorrt]' on a machine with an NVIDIA GPU"
            in " ".join(err.split()))


# ---- the engine's build/cache flow against a stand-in `tensorrt` module (records the API calls) -------------------
class _FakeTRT:
    """Just enough of the TensorRT 10 Python API for `build_engine` and the engine cache (no GPU)."""

    __version__ = "10.3.0"
    float32, float16, bfloat16 = "float32", "float16", "bfloat16"

    def __init__(self) -> None:
        import types

        self.calls: list[tuple] = []
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, lvl=None: None})
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", BF16="BF16", PREFER_PRECISION_CONSTRAINTS="PREFER")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        fake = self

        class Out:
            dtype = "float32"

        class Layer:
            def __init__(self, name: str, kind: str) -> None:
                self.name, self.type, self.num_outputs = name, types.SimpleNamespace(name=kind), 1
                self.precision = None

            def get_output(self, j):
                return Out()

            def set_output_type(self, j, dtype):
                fake.calls.append(("output_type", self.name, dtype))

        class Network:
            layers = [Layer("/quantizer/ArgMin", "TOPK"), Layer("/model/denoiser/Conv", "CONVOLUTION"),
                      Layer("/model/x/InstanceNormalization", "NORMALIZATION")]
            num_layers = 3

            def get_layer(self, i):
                return self.layers[i]

        class Profile:
            def set_shape(self, name, mn, opt, mx):
                fake.calls.append(("set_shape", name, mn, opt, mx))

        class Cache:
            def serialize(self):
                return b"timing-cache"

        class Config:
            progress_monitor = None

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))

            def add_optimization_profile(self, p):
                fake.calls.append(("profile",))

            def create_timing_cache(self, blob):
                fake.calls.append(("timing_in", bytes(blob)))
                return Cache()

            def set_timing_cache(self, cache, ignore):
                return True

            def get_timing_cache(self):
                return Cache()

        class Builder:
            def __init__(self, logger) -> None:
                pass

            def create_network(self, flags):
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                mon = config.progress_monitor
                if mon is not None:  # TensorRT reports phases from its own threads
                    mon.phase_start("Building engine", None, 2)
                    fake.calls.append(("step", mon.step_complete("Building engine", 0)))
                    mon.phase_finish("Building engine")
                return b"serialized-engine"

        class Parser:
            num_errors = 0

            def __init__(self, network, logger) -> None:
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse", path))
                return True

        class Engine:
            num_io_tensors = 4

            def get_tensor_name(self, i):
                return ["lq", "noise", "hr", "latent"][i]

            def create_execution_context(self):
                return object()

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, blob):
                assert blob == b"serialized-engine"
                return Engine()

        class IProgressMonitor:
            def __init__(self) -> None:
                pass

        self.Builder, self.OnnxParser, self.Runtime = Builder, Parser, Runtime
        self.IProgressMonitor = IProgressMonitor


def test_engine_build_and_cache_flow_with_a_stand_in_tensorrt(tmp_path, monkeypatch):
    import types

    import torch

    import tadsr_cli.engines.tensorrt_engine as te
    from tadsr_cli.models.checkpoints import save_model
    from tadsr_cli.models.presets import tiny_test_config
    from tadsr_cli.models.sr_model import DiffusionSR

    fake = _FakeTRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    props = types.SimpleNamespace(major=8, minor=9, name="NVIDIA L4", total_memory=24 << 30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: props)
    onnx_file = tmp_path / "graph.onnx"
    onnx_file.write_bytes(b"onnx")
    monkeypatch.setattr(te.TensorRTEngine, "_onnx", lambda self: onnx_file)  # no export needed here
    model_path = save_model(DiffusionSR(tiny_test_config()), tmp_path / "m.safetensors")
    model = DiffusionSR(tiny_test_config())

    eng = te.create(model, device="cuda", precision="fp16", tile=64, batch=2, model_path=model_path,
                    show_progress=False)
    assert eng.builds == 1 and eng.gpu_name == "NVIDIA L4"
    assert ("set_shape", "lq", (1, 3, 16, 16), (2, 3, 64, 64), (2, 3, 64, 64)) in fake.calls
    assert ("set_shape", "noise", (1, 48, 16, 16), (2, 48, 64, 64), (2, 48, 64, 64)) in fake.calls
    assert ("flag", "FP16") in fake.calls and ("flag", "PREFER") in fake.calls
    kept = {c[1] for c in fake.calls if c[0] == "output_type"}
    assert kept == {"/quantizer/ArgMin", "/model/x/InstanceNormalization"}  # convs stay fp16
    plans = sorted(eng.folder.glob("*.plan"))
    assert len(plans) == 1 and "fp16" in plans[0].name and "NVIDIA-L4" in plans[0].name
    assert (eng.folder / plan.timing_cache_name("10.3.0", "NVIDIA L4")).read_bytes() == b"timing-cache"

    # a second engine (another run) and new resolutions inside the profile: no rebuild
    fake.calls.clear()
    again = te.create(model, device="cuda", precision="fp16", tile=64, batch=2, model_path=model_path,
                      show_progress=False)
    again._get(1, 48, 32)
    again._get(2, 64, 64)
    assert again.builds == 0 and ("build",) not in fake.calls
    # outside the profile (a larger tile): one more engine, and the timing cache is fed back in
    again._get(1, 128, 128)
    assert again.builds == 1 and ("timing_in", b"timing-cache") in fake.calls
    assert len(list(eng.folder.glob("*.plan"))) == 2
    # another precision is another engine; bf16 needs compute capability 8.0 (this one is 8.9)
    bf = te.create(model, device="cuda", precision="bf16", tile=64, batch=2, model_path=model_path,
                   show_progress=True)  # with the progress display and an IProgressMonitor
    assert bf.builds == 1 and ("flag", "BF16") in fake.calls and ("step", True) in fake.calls
    with pytest.raises(EngineUnavailableError, match="CUDA"):
        te.create(model, device="cpu", precision="fp16", model_path=model_path)
