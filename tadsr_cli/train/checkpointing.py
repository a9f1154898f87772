"""Training checkpoints: atomic `step-XXXXXXXX.pt` files with sha256 sidecars, keep-last-N, corrupt-file fallback."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tadsr_cli.base.atomic import atomic_write_path
from tadsr_cli.base.errors import TrainingError

CKPT_FORMAT = "tadsr-train-checkpoint"


CKPT_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class CheckpointManager:
    """`folder/step-XXXXXXXX.pt` written atomically, each followed by a `.sha256` sidecar; keeps the last `keep`."""

    def __init__(self, folder: Path, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep = max(int(keep), 1)

    def path_for(self, step: int) -> Path:
        return self.folder / f"step-{step:08d}.pt"

    def list(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in self.folder.glob("step-*.pt"):
            try:
                out.append((int(p.stem.split("-", 1)[1]), p))
            except ValueError:
                continue
        return sorted(out)

    def latest_path(self) -> Path | None:
        items = self.list()
        return items[-1][1] if items else None

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.path_for(step)
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        with atomic_write_path(path) as tmp:
            tmp.write_bytes(data)
        sidecar = path.with_suffix(".sha256")
        with atomic_write_path(sidecar) as tmp:
            tmp.write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
        self.prune()
        return path

    def prune(self) -> None:
        items = self.list()
        for _, p in items[: max(len(items) - self.keep, 0)]:
            for q in (p, p.with_suffix(".sha256")):
                with contextlib.suppress(OSError):
                    q.unlink()

    def load(self, path: Path) -> dict[str, Any]:
        sidecar = path.with_suffix(".sha256")
        if sidecar.is_file():
            expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
            if expected and _sha256(path) != expected:
                raise TrainingError(f"{path.name}: checksum mismatch (file corrupt or truncated)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any decoding failure means unreadable
            raise TrainingError(
                f"{path.name}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from exc
        if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
            raise TrainingError(f"{path.name}: not a tadsr training checkpoint")
        return state

    def load_latest(self, warn: Callable[[str], None]) -> tuple[dict[str, Any], Path] | None:
        """The newest readable checkpoint; unreadable newer ones are reported through `warn` and skipped."""
        items = self.list()
        if not items:
            return None
        errors = []
        for i in range(len(items) - 1, -1, -1):
            path = items[i][1]
            try:
                state = self.load(path)
            except TrainingError as exc:
                errors.append(str(exc))
                prev = items[i - 1][1].name if i > 0 else None
                warn(
                    f"checkpoint {exc}; "
                    + (f"falling back to the previous one, {prev}" if prev else "no older checkpoint")
                )
                continue
            return state, path
        raise TrainingError(f"no readable checkpoint in {self.folder}: " + "; ".join(errors))
