"""`--ray` without a cluster: the install hint, addresses, worker shapes, how a video is cut into tasks."""

from __future__ import annotations

import socket
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tadsr_cli.base.errors import ConfigError
from tadsr_cli.pipeline.ray_cluster import INSTALL_HINT, ClusterInfo, check_address, worker_shape
from tadsr_cli.pipeline.ray_video import chunk_segments, plan_ranges
from tadsr_cli.pipeline.ray_video_chunk import warmup_frames
from tadsr_cli.pipeline.video_segments import SegmentWriter, WorkFolder, work_dir_for
from tests.test_batch import run_cli


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    return tmp_path / "in"


def test_without_ray_one_line_says_how_to_install(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    code, _, err = run_cli(["batch", str(folder), "-o", str(tmp_path / "out"), "--ray", "auto"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and INSTALL_HINT in " ".join(err.split()), err
    assert not (tmp_path / "out" / "a_x4.png").exists()


def test_unreachable_head_is_one_line(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'tadsr[ray]')")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli(["batch", str(folder), "-o", str(tmp_path / "out"), "--ray", f"127.0.0.1:{port}"],
                           capsys)
    assert code == 2 and "no Ray head node answers" in err and len(err.strip().splitlines()) <= 2, err


@pytest.mark.parametrize("text", ["auto", "AUTO", "10.0.0.5:6379", "head-0.example:6379", "ray://h:10001",
                                  "[::1]:6379"])
def test_addresses_accepted(text: str) -> None:
    assert check_address(text)


@pytest.mark.parametrize("text", ["", "head", "head:", "head:0", "head:70000", "http://h:1", "a b:1"])
def test_addresses_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        check_address(text)


def test_worker_shape() -> None:
    cpus = ClusterInfo("auto", nodes=2, cpus=16, gpus=0, started_here=False)
    assert (worker_shape(cpus, "auto", None).count, worker_shape(cpus, "auto", None).cpus) == (16, 1)
    assert (worker_shape(cpus, "cpu", 4).count, worker_shape(cpus, "cpu", 4).cpus) == (4, 4)
    gpus = ClusterInfo("auto", nodes=2, cpus=32, gpus=3, started_here=False)
    assert (worker_shape(gpus, "auto", None).count, worker_shape(gpus, "auto", None).gpus) == (3, 1)
    assert worker_shape(gpus, "cpu", None).gpus == 0  # --device cpu keeps GPUs out
    with pytest.raises(Exception, match="no GPU"):
        worker_shape(cpus, "cuda", None)


def test_warmup_settles_the_smoothing() -> None:
    assert warmup_frames(0.0) == 0
    w = warmup_frames(0.7)
    assert 0.7 ** w <= 0.01 < 0.7 ** (w - 1)
    assert warmup_frames(0.95) == 48  # capped: a segment's worth


def test_video_ranges_follow_segments() -> None:
    assert plan_ranges(240, 48, set(), workers=2) == [(0, 48), (48, 96), (96, 144), (144, 192), (192, None)]
    assert plan_ranges(240, 48, {1, 2}, workers=1) == [(0, 48), (144, None)]  # resume: only what is missing
    assert plan_ranges(100, 48, set(), workers=1, to_end=False) == [(0, 48), (48, 96), (96, 100)]
    long = plan_ranges(48 * 1000, 48, set(), workers=4)
    assert all((stop or 48000) - first == 48 * 8 for first, stop in long)  # capped task size
    assert chunk_segments(5, 2) == 1 and chunk_segments(40, 2) == 5


def test_work_folder_keeps_segments_after_a_gap(tmp_path: Path) -> None:
    """Ray finishes segments out of order: a resume keeps 0 and 2 although 1 is missing (locally: only 0)."""
    dst = tmp_path / "out.mp4"
    manifest = {"version": 1}
    work = WorkFolder.open(dst, manifest, reuse=True)
    for index in (0, 2):
        seg = SegmentWriter(work.segment_path(index), index, "hash")
        seg.add_frame(index, 1)
        seg.commit()
    assert [s.index for s in WorkFolder.open(dst, manifest, reuse=True, gaps=True).done] == [0, 2]
    assert [s.index for s in WorkFolder.open(dst, manifest, reuse=True).done] == [0]
    assert sorted(p.name for p in work_dir_for(dst).iterdir()) == ["manifest.json", "seg-000000.pkts"]


class _Ref:
    def __init__(self, value: object = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error


class _Actor:
    """Runs `Worker`-like calls at once; records what it was started with and what it ran."""

    def __init__(self, settings: object, engines: dict) -> None:
        self.settings, self.engines, self.ran = settings, engines, []

    def __getattr__(self, method: str) -> object:
        actor = self

        class _Method:
            @staticmethod
            def options(**kw: object) -> type:
                return _Method

            @staticmethod
            def remote(*args: object) -> _Ref:
                if method == "describe":
                    return _Ref(actor.engines)
                if method == "use_backend":
                    actor.settings = replace(actor.settings, model=replace(actor.settings.model, backend=args[0]))
                    return _Ref(None)
                actor.ran.append((method, args))
                if args and args[0] == "boom":
                    return _Ref(error=ValueError("bad input"))
                return _Ref(f"{method}{args}")

        return _Method


class _FakeRay:
    """The few calls `WorkerPool` makes, executed in this process."""

    def __init__(self, engines: dict) -> None:
        self.engines, self.actors = engines, []
        self.exceptions = type("exceptions", (), {"RayActorError": RuntimeError})

    def remote(self, cls: object) -> object:
        ray = self

        class _Options:
            def options(self, **kw: object) -> _Options:
                return self

            def remote(self, settings: object, threads: int, model_file: object) -> _Actor:
                ray.actors.append(_Actor(settings, ray.engines))
                return ray.actors[-1]

        return _Options()

    def get(self, ref: _Ref) -> object:
        if ref.error is not None:
            raise ref.error
        return ref.value

    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return list(refs), []

    def kill(self, actor: object, no_restart: bool = True) -> None:
        pass

    def cancel(self, ref: object, force: bool = False) -> None:
        pass


def test_pool_decides_backend_auto_once_and_shares_the_work() -> None:
    from tadsr_cli.pipeline.ray_cluster import WorkerShape
    from tadsr_cli.pipeline.ray_pool import Unit, WorkerPool
    from tadsr_cli.pipeline.settings import RunSettings

    ray = _FakeRay({"image": {"backend": "openvino", "precision": "bf16", "device": "cpu"}})
    pool = WorkerPool(ray, WorkerShape(count=3, cpus=1, gpus=0), RunSettings(), ["image"])
    assert pool.start()["image"]["backend"] == "openvino"
    # the first worker measured `auto`; the others run its choice, so every output comes from one engine
    assert [a.settings.model.backend for a in ray.actors] == ["auto", "openvino", "openvino"]
    units = [Unit(i, "image", ("boom" if i == 4 else f"f{i}",)) for i in range(9)]
    out = {unit.key: (value, exc) for unit, value, exc in pool.map_unordered(units)}
    assert sorted(out) == list(range(9))
    assert isinstance(out[4][1], ValueError) and out[3] == ("image('f3',)", None)  # a failure stays one unit's
    counts = [sum(m == "image" for m, _ in a.ran) for a in ray.actors]
    assert sum(counts) == 9 and min(counts) >= 2  # every worker took work (the first started first, took more)
    pool.close()
