"""`--ray` on a loopback Ray cluster (`ray start --head`, 2 CPUs): a folder and a long video give what a local run
gives, a dead driver's video resumes, a killed worker is retried. Inputs are tiny (32x32 images and frames) and the
model is the embedded default, so the whole file runs in about a minute on a 2-core CPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tadsr_cli.pipeline.video_segments import work_dir_for
from tests.test_batch import run_cli
from tests.test_video import make_clip, packets

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'tadsr[ray]')")

FRAMES = 240
ROOT = Path(__file__).resolve().parents[1]
# Runs name the backend: `auto` times the engines the first time it meets a thread count (a local run with 2
# threads, workers with 1), seconds each here; how the cluster decides `auto` once is tested in test_ray_plan.py.
TORCH = ["--backend", "torch"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def head() -> Iterator[dict[str, str]]:
    """A head node on this machine with 2 CPUs (its own ports and temp folder; stopped after the module)."""
    port, dashboard, client, agent = _free_ports(4)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
         "--num-cpus=2", "--num-gpus=0", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver (this process) matches the head
    try:
        _wait_port(port, proc)
        yield {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard}"}
    finally:
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old
        proc.terminate()  # `ray start --block` stops the node's processes on SIGTERM
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def video_frames(path: Path) -> list[tuple[int, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(int(f.pts), f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]


def frame_psnr(a: Path, b: Path) -> tuple[float, list[tuple[int, np.ndarray]]]:
    fa, fb = video_frames(a), video_frames(b)
    assert [p for p, _ in fa] == [p for p, _ in fb]  # same frames at the same timestamps
    return float(np.mean([psnr(x, y) for (_, x), (_, y) in zip(fa, fb, strict=True)])), fa


def leftovers(folder: Path) -> list[str]:
    """Temp files or work folders left in `folder` (atomic writes leave none)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


@pytest.fixture
def like_a_worker() -> Iterator[None]:
    """The local run at a worker's thread count (1): float reductions then add up in the same order, so outputs
    can be compared exactly; an earlier in-process test may have left torch at any count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 240-frame 32x32 clip with audio and subtitles, and what a local run makes of it."""
    folder = tmp_path_factory.mktemp("clip")
    src = make_clip(folder / "clip.mp4", size=(32, 32), n=FRAMES)
    local = folder / "local.mp4"
    from tadsr_cli.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["upscale", str(src), "-o", str(local), "-q", *TORCH])
    assert stop.value.code in (0, None) and local.is_file()
    return {"src": src, "local": local}


def test_folder_on_the_cluster_writes_what_a_local_run_writes(like_a_worker: None, head: dict[str, str], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    for i, rel in enumerate(["a.png", "b.jpg", "sub/c.png", "sub/d.webp", "sub/deeper/e.png"]):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)).save(src / rel)
    code, _, err = run_cli(["batch", str(src), "-o", str(tmp_path / "local"), *TORCH], capsys)
    assert code == 0, err
    code, _, err = run_cli(["batch", str(src), "-o", str(tmp_path / "ray"), "--ray", head["address"], *TORCH],
                           capsys)
    assert code == 0, err
    assert f"using Ray cluster {head['address']}" in " ".join(err.split())
    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.*"))
    remote = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.*"))
    assert local == remote and len(local) == 5 and not leftovers(tmp_path / "ray")
    for rel in local:
        a = np.asarray(Image.open(tmp_path / "local" / rel).convert("RGB"))
        b = np.asarray(Image.open(tmp_path / "ray" / rel).convert("RGB"))
        assert psnr(a, b) >= 60.0, rel

    # Run again: every output exists, so every file is skipped, as locally (JSON events say so)
    code, out, _ = run_cli(["batch", str(src), "-o", str(tmp_path / "ray"), "--ray", head["address"], "--json",
                            *TORCH], capsys)
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and events[-1]["event"] == "summary" and events[-1]["skipped"] == 5


def test_long_video_across_workers(head: dict[str, str], clip: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    dst = tmp_path / "ray.mp4"
    code, out, err = run_cli(["upscale", str(clip["src"]), "-o", str(dst), "--ray", head["address"], "--json",
                              *TORCH], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    cluster = next(e for e in events if e["event"] == "cluster")
    assert cluster["workers"] == 2
    frames = [e["done"] for e in events if e["event"] == "progress" and e["unit"] == "frame"]
    assert frames and frames[-1] == FRAMES  # frames counted across both workers, segment by segment
    mean, got = frame_psnr(clip["local"], dst)
    assert len(got) == FRAMES and mean >= 40.0, mean
    assert packets(dst, "audio") == packets(clip["src"], "audio")
    assert packets(dst, "subtitle") == packets(clip["local"], "subtitle")
    assert not work_dir_for(dst).exists() and not leftovers(tmp_path)


def test_dead_driver_leaves_a_resumable_video(head: dict[str, str], clip: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    dst = tmp_path / "out.mp4"
    work = work_dir_for(dst)
    env = dict(os.environ)
    driver = subprocess.Popen([sys.executable, "-m", "tadsr_cli", "upscale", str(clip["src"]), "-o", str(dst),
                               "--ray", head["address"], "-q", *TORCH],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 90
        while not list(work.glob("seg-*.pkts")) and driver.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        assert driver.poll() is None, "the run ended before a segment was written"
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies without any cleanup
    finally:
        driver.wait(30)
    assert not dst.exists() and list(work.glob("seg-*.pkts"))

    code, _, err = run_cli(["upscale", str(clip["src"]), "-o", str(dst), "--ray", head["address"], *TORCH],
                           capsys)
    assert code == 0, err
    assert "resumed after frame" in err
    mean, got = frame_psnr(clip["local"], dst)
    assert len(got) == FRAMES and mean >= 40.0, mean
    assert not work.exists() and not leftovers(tmp_path)


def test_killed_worker_is_retried(head: dict[str, str], clip: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    """A worker process killed mid-task (by the pid Ray's state API reports) is restarted and its task rerun."""
    from ray.util.state import list_tasks

    killed: list[int] = []
    state_errors: list[str] = []
    stop = threading.Event()

    def kill_a_running_chunk() -> None:
        while not stop.is_set() and not killed:
            try:
                running = list_tasks(address=head["dashboard"], filters=[("state", "=", "RUNNING")],
                                     raise_on_missing_output=False)
            except Exception as exc:  # the dashboard may still be starting
                state_errors.append(str(exc).splitlines()[0])
                time.sleep(0.5)
                continue
            for task in running:
                if task.name.endswith("Worker.chunk") and task.worker_pid:
                    os.kill(task.worker_pid, signal.SIGKILL)
                    killed.append(task.worker_pid)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_running_chunk, daemon=True)
    killer.start()
    dst = tmp_path / "out.mp4"
    try:
        code, _, err = run_cli(["upscale", str(clip["src"]), "-o", str(dst), "--ray", head["address"], *TORCH],
                               capsys)
    finally:
        stop.set()
        killer.join(10)
    assert killed, f"no running task was seen to kill (state API: {state_errors[-1:] or 'answered'})"
    assert code == 0, err
    mean, got = frame_psnr(clip["local"], dst)
    assert len(got) == FRAMES and mean >= 40.0, mean
    assert not work_dir_for(dst).exists() and not leftovers(tmp_path)


def test_eval_on_the_cluster_measures_what_a_local_eval_measures(like_a_worker: None, head: dict[str, str],
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    for name in ("lq", "gt"):
        (tmp_path / name).mkdir()
    for i in range(3):
        small = (np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)
        hr = Image.fromarray(small).resize((128, 128), Image.BICUBIC)
        hr.save(tmp_path / "gt" / f"p{i}.png")
        hr.resize((32, 32), Image.BICUBIC).save(tmp_path / "lq" / f"p{i}.png")
    common = ["eval", "--lq", str(tmp_path / "lq"), "--gt", str(tmp_path / "gt"), "--no-niqe", "--no-lpips", *TORCH]
    reports = {}
    for where, extra in (("local", []), ("ray", ["--ray", head["address"]])):
        code, _, err = run_cli([*common, "-o", str(tmp_path / where), *extra], capsys)
        assert code == 0, err
        reports[where] = json.loads((tmp_path / where / "report.json").read_text())
    rows = {w: [(r["image"], r["psnr_y"], r["ssim_y"]) for r in rep["per_image"]] for w, rep in reports.items()}
    assert rows["local"] == rows["ray"] and len(rows["ray"]) == 3
    assert "Ray" in reports["ray"]["methods"][0]["device"]
