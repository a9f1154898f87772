"""Tile-invariant GroupNorm: moments, ownership, lockstep runs equal to the whole image (CPU)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tadsr_cli.engines import create_engine
from tadsr_cli.models.model_cache import resolve_model
from tadsr_cli.models.presets import tiny_test_config, tiny_vq_test_config
from tadsr_cli.models.sr_model import DiffusionSR
from tadsr_cli.models.tile_norm import GroupMoments, TileNormState, norm_state, region_moments, scale_rect
from tadsr_cli.pipeline.lockstep import LockstepAborted, NormExchange, run_lockstep
from tadsr_cli.pipeline.tiling import TileGrid, axis_owned
from tadsr_cli.pipeline.upscaler import TileOptions, Upscaler

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def random_model(config, seed: int = 0) -> DiffusionSR:
    """A model whose every weight is random (the residual models' zero-initialised layers would hide the net)."""
    torch.manual_seed(seed)
    model = DiffusionSR(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.6 / max(1.0, p[0].numel()) ** 0.5)
            else:
                p.normal_(0.0, 0.1)
    return model


def photo_lq(path: Path, size: tuple[int, int], down: int) -> np.ndarray:
    img = Image.open(path).convert("RGB")
    img = img.resize((img.width // down, img.height // down), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    y, x = (arr.shape[0] - size[0]) // 2, (arr.shape[1] - size[1]) // 2
    return np.ascontiguousarray(arr[y:y + size[0], x:x + size[1]])


# ---- statistics pieces -----------------------------------------------------------------------------------------
def test_group_moments_merge_equals_whole_array():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, (n, 4)) for n in (5, 17, 1, 40)]
    acc = GroupMoments()
    for p in parts:  # one "tile" per part, 4 groups
        acc.add(np.stack([np.full(4, len(p)), p.mean(0), ((p - p.mean(0)) ** 2).sum(0)], axis=1))
    whole = np.concatenate(parts)
    got = acc.mean_var()
    np.testing.assert_allclose(got[:, 0], whole.mean(0), rtol=1e-6)
    np.testing.assert_allclose(got[:, 1], whole.var(0), rtol=1e-5)


def test_region_moments_match_numpy():
    x = torch.randn(8, 10, 12) * 3 + 1
    got = region_moments(x, groups=4, rect=(2, 9, 1, 11)).numpy()
    ref = x[:, 2:9, 1:11].reshape(4, -1).double().numpy()
    np.testing.assert_allclose(got[:, 0], ref.shape[1])
    np.testing.assert_allclose(got[:, 1], ref.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[:, 2] / ref.shape[1], ref.var(1), rtol=1e-4)


@pytest.mark.parametrize("length,tile,overlap", [(96, 32, 8), (160, 64, 16), (64, 64, 8), (200 // 8 * 8, 48, 16)])
def test_owned_regions_partition_every_level(length, tile, overlap):
    """Each pixel of the image, at every power-of-two scale, is owned by exactly one tile."""
    grid = TileGrid.build(length, length, tile, overlap, 8, 4)
    for k in (-3, -2, -1, 0, 1, 2):
        n = length << k if k >= 0 else length >> -k
        count = np.zeros((n, n), dtype=int)
        for t in grid.tiles:
            y0, y1, x0, x1 = scale_rect(grid.owned_rect(t), k)
            oy, ox = (t.y << k, t.x << k) if k >= 0 else (t.y >> -k, t.x >> -k)
            count[oy + y0:oy + y1, ox + x0:ox + x1] += 1
        assert (count == 1).all(), f"scale 2**{k}"


def test_axis_owned_splits_overlaps_in_the_middle():
    assert axis_owned([0, 24, 48], 32, 80) == [(0, 28), (28, 52), (52, 80)]
    assert axis_owned([0], 64, 64) == [(0, 64)]


# ---- lockstep ------------------------------------------------------------------------------------------------
def test_exchange_merges_all_parties_and_failure_does_not_hang():
    ex = NormExchange(3)
    outs = []

    def party(value: float) -> None:
        ex.acquire()
        try:
            m = torch.tensor([[[10.0, value, 0.0]]])  # one tile, one group, 10 values all equal to `value`
            outs.append(ex.exchange(m))
        finally:
            ex.release()

    threads = [threading.Thread(target=party, args=(v,)) for v in (1.0, 2.0, 6.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(outs) == 3 and all(torch.allclose(o, outs[0]) for o in outs)
    assert outs[0][0, 0].item() == pytest.approx(3.0)  # mean of 1, 2, 6
    assert outs[0][0, 1].item() == pytest.approx(np.var([1.0, 2.0, 6.0]))

    def work(i, norms):
        if i == 1:
            raise ValueError("batch 1 broke")
        with norm_state(norms):
            norms.normalize(torch.nn.GroupNorm(1, 2), torch.randn(1, 2, 4, 4))

    with pytest.raises(ValueError, match="batch 1 broke"):
        run_lockstep([[(0, 4, 0, 4)]] * 3, [(4, 4)] * 3, work)
    assert LockstepAborted.__mro__[1] is RuntimeError


def test_norm_state_rejects_half_configured_lockstep():
    with pytest.raises(ValueError):
        TileNormState(owned=[(0, 4, 0, 4)])


@pytest.mark.parametrize("config", [tiny_test_config, tiny_vq_test_config], ids=["pixel-unshuffle", "vq"])
def test_tiled_equals_whole_image_with_random_model(config):
    """Random weights make every GroupNorm matter: tile-local norms are far off, whole-image norms are exact."""
    model = random_model(config())
    engine = create_engine("torch", model, device="cpu")
    m = engine.lq_multiple
    rng = np.random.default_rng(1)
    img = np.clip(rng.random((3 * m, 4 * m - 5, 3), dtype=np.float32) * 0.3
                  + np.linspace(0, 0.7, 4 * m - 5, dtype=np.float32)[None, :, None], 0, 1)
    ref = Upscaler(engine, TileOptions(tile=0), seed=3).upscale(img)
    exact = Upscaler(engine, TileOptions(tile=2 * m, overlap=m, batch=2), seed=3).upscale(img)
    local = Upscaler(engine, TileOptions(tile=2 * m, overlap=m, batch=2, whole_image_norms=False),
                     seed=3).upscale(img)
    # measured: 85.6 / 51.4 dB (pixel-unshuffle), 56.1 / 43.5 dB (VQ: its HR decoder needs more context);
    # the thresholds sit just under the lockstep figure, far above the tile-local one
    assert psnr(exact, ref) > {"tiny_test_config": 84.0, "tiny_vq_test_config": 55.0}[config.__name__]
    assert psnr(local, ref) < psnr(exact, ref) - 10.0


def test_models_are_unchanged_after_a_lockstep_run():
    model = random_model(tiny_test_config())
    keys = list(model.state_dict())
    engine = create_engine("torch", model, device="cpu")
    img = np.random.default_rng(0).random((40, 40, 3), dtype=np.float32)
    Upscaler(engine, TileOptions(tile=16, overlap=8)).upscale(img)
    assert list(model.state_dict()) == keys
    assert sum(isinstance(mod, torch.nn.GroupNorm) for mod in model.modules()) > 0


@pytest.mark.parametrize("norms", [True, False], ids=["lockstep", "tile-local"])
def test_network_call_runs_the_engine_as_upscale_does(norms):
    """Benchmarks time `network_call` as "the network alone": same batches, inputs and norm mode as `upscale`."""
    model = random_model(tiny_test_config())
    engine = create_engine("torch", model, device="cpu")
    img = np.random.default_rng(0).random((40, 40, 3), dtype=np.float32)
    up = Upscaler(engine, TileOptions(tile=16, overlap=8, batch=3, whole_image_norms=norms), seed=5)
    calls: list[tuple] = []
    real_run = type(engine).run

    def recording_run(self, lq, noise, **kw):
        calls.append((lq.numpy().tobytes(), noise.numpy().tobytes(), "norms" in kw))
        return real_run(self, lq, noise, **kw)

    type(engine).run = recording_run
    try:
        up.upscale(img)
        by_upscale = sorted(calls)
        calls.clear()
        up.network_call(img)()
    finally:
        type(engine).run = real_run
    assert len(by_upscale) == 3 and sorted(calls) == by_upscale  # 9 tiles in batches of 3
    assert all(c[2] == norms for c in calls)


# ---- the shipped model on real photos ---------------------------------------------------------------------------
def _photos() -> list[tuple[str, np.ndarray]]:
    if not DATA.is_dir():
        pytest.fail(f"test data missing: {DATA}")
    return [
        ("Dragonfly (held out)", photo_lq(DATA / "train-hr" / "Dragonfly_by_Bolly.jpg", (200, 256), 4)),
        ("realset65/0003", photo_lq(DATA / "realset65" / "0003.jpg", (224, 200), 1)),
    ]


# Measured (fp32, 1 thread) lockstep / tile-local norms: Dragonfly tile 64 77.0 / 40.1 dB, tile 128 86.3 / 44.2 dB;
# realset65/0003 tile 64 79.2 / 34.9 dB, tile 128 85.4 / 41.5 dB. The thresholds keep 1.5 dB for float rounding,
# so a run with tile-local norms (<= 44.2 dB) fails. The README's 69-88 dB are bench_pipeline.py's 256x320 crops.
SHIPPED_MIN_DB = {("Dragonfly (held out)", 64): 75.5, ("Dragonfly (held out)", 128): 84.5,
                  ("realset65/0003", 64): 77.5, ("realset65/0003", 128): 84.0}


def test_shipped_model_tiles_match_whole_image_on_real_photos():
    engine = create_engine("torch", resolve_model(None), device="cpu")
    for name, img in _photos():
        ref = Upscaler(engine, TileOptions(tile=0), seed=0).upscale(img)
        for tile in (64, 128):
            out = Upscaler(engine, TileOptions(tile=tile, overlap=16), seed=0).upscale(img)
            got = psnr(out, ref)
            assert got >= SHIPPED_MIN_DB[name, tile], f"{name}, tile {tile}: {got:.2f} dB"


def test_onnx_engine_tiles_use_whole_image_norms(tmp_path):
    """ONNX Runtime runs whole images; its tiled runs go through the torch engine of the same model in lockstep."""
    pytest.importorskip("onnxruntime")
    model = random_model(tiny_test_config())
    ort = create_engine("onnx", model, device="cpu", cache_dir=tmp_path)
    assert ort.lockstep_engine().name == "torch" and ort.lockstep_engine() is ort.lockstep_engine()
    m = ort.lq_multiple
    img = np.random.default_rng(2).random((3 * m, 3 * m, 3), dtype=np.float32)
    whole = Upscaler(ort, TileOptions(tile=0), seed=1).upscale(img)
    tiled = Upscaler(ort, TileOptions(tile=2 * m, overlap=m), seed=1).upscale(img)
    assert psnr(tiled, whole) > 80.5  # measured 82.3 dB; tile-local norms give 66.9 dB
