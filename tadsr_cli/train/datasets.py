"""Training and validation data: HR folders degraded on the fly, paired LQ/GT folders, fixed validation pairs.

Reproducibility: every random choice of an item (which image, crop position, flips, the whole degradation) comes
from a generator seeded by ``(seed, epoch, index)`` alone, never from process or worker state, so any number of
DataLoader workers, any DDP rank, and a resumed run produce the same sample for the same ``(epoch, index)``.
Items are dicts ``{"gt": 3xHxW float32 in [-1, 1], "lq": 3x(H/s)x(W/s) in [-1, 1], "index": int, "seed": int,
"light": bool}``; ``seed`` is the item's 63-bit seed (a stable key, e.g. for caching teacher targets per crop);
``light`` says the LQ is a clean downscale (`DegradationConfig.light_prob`), not a degraded one.

The epoch lives in a shared-memory tensor: `set_epoch` in the main process is seen by DataLoader workers that
already exist (``persistent_workers=True``), as long as it is called before the epoch's iterator is created.

Threads: the per-crop work is single-threaded numpy/OpenCV (~9 ms CPU for a 256 crop); parallelism comes from
DataLoader workers. Do not call ``cv2.setNumThreads`` inside forked workers (it can deadlock OpenCV's pthreads
pool inherited from the parent); call it in the main process before the workers start if needed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tadsr_cli.base.errors import TrainingError
from tadsr_cli.pipeline.image_read import IMAGE_EXTENSIONS, read_samples, to_float01
from tadsr_cli.train.crops import center_crop, pad_to_min, random_augment, random_crop, to_tensor
from tadsr_cli.train.data_files import check_readable, is_excluded, list_images
from tadsr_cli.train.degradation_config import DegradationConfig
from tadsr_cli.train.degradations import degrade

# stream tags keep the generators of different purposes independent for the same user seed
_STREAM_ITEM = 0x5EED_0001
_STREAM_ORDER = 0x5EED_0002
_STREAM_VAL = 0x5EED_0003
_STREAM_PAIRED = 0x5EED_0004


def item_seed(*words: int) -> int:
    """A 63-bit seed from integer words (a `numpy.random.SeedSequence` hash)."""
    ss = np.random.SeedSequence([int(w) % 2**63 for w in words])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


class _ImageCache:
    """Lazily decoded images (uint8; uint16 for 16-bit files), per process (each DataLoader worker fills its own)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._images: dict[Path, np.ndarray] = {}

    def get(self, path: Path) -> np.ndarray:
        img = self._images.get(path)
        if img is None:
            img = read_samples(path)
            if self.enabled:
                self._images[path] = img
        return img


class _EpochMixin:
    """Epoch counter in shared memory (visible to existing DataLoader workers)."""

    def _init_epoch(self, epoch: int) -> None:
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._epoch[0] = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])


def _resolve_degradation(cfg: DegradationConfig | Mapping[str, Any] | None, scale: int) -> DegradationConfig:
    if cfg is None:
        cfg = DegradationConfig(scale=scale)
    elif not isinstance(cfg, DegradationConfig):
        cfg = DegradationConfig.from_dict({"scale": scale, **dict(cfg)})
    if cfg.scale != scale:
        raise TrainingError(f"degradation scale {cfg.scale} differs from the dataset scale {scale}")
    return cfg


def _check_gt_size(gt_size: int, scale: int) -> None:
    if gt_size < scale or gt_size % scale:
        raise TrainingError(f"gt_size {gt_size} must be a positive multiple of the scale {scale}")


# ---------------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------------


class HRFolderDataset(_EpochMixin, Dataset):
    """Random GT crops of a folder of HR images, degraded on the fly into LQ crops.

    Args:
        root: folder (searched recursively) or an explicit list of image files.
        gt_size: GT crop side (a multiple of ``scale``); the LQ side is ``gt_size // scale``. Images smaller than a
            crop are reflect-padded.
        scale: SR factor.
        degradation: `DegradationConfig`, a recipe mapping, or None (Real-ESRGAN with ResShift's parameters).
        seed: base seed; item ``index`` of epoch ``e`` depends only on ``(seed, e, index)``.
        exclude: file names (or stems, or paths relative to ``root``) to leave out, e.g. the validation hold-out.
        length: items per epoch (default: the number of images); item ``i`` uses image ``perm[i % n]`` of a
            per-(seed, epoch, i // n) permutation, so every image is used equally often.
        use_hflip, use_rot: random horizontal flip / vertical flip + transpose (8 dihedral variants).
        cache: keep decoded images in memory (uint8, or uint16 for 16-bit files).
        check_files: probe every file's header at construction (unreadable files raise `TrainingError`).
    """

    def __init__(
        self,
        root: str | Path | Sequence[str | Path],
        gt_size: int = 256,
        scale: int = 4,
        degradation: DegradationConfig | Mapping[str, Any] | None = None,
        seed: int = 0,
        exclude: Iterable[str] = (),
        length: int | None = None,
        use_hflip: bool = True,
        use_rot: bool = True,
        cache: bool = True,
        recursive: bool = True,
        check_files: bool = True,
        epoch: int = 0,
    ) -> None:
        _check_gt_size(gt_size, scale)
        self.gt_size, self.scale = int(gt_size), int(scale)
        self.degradation = _resolve_degradation(degradation, scale)
        self.seed = int(seed)
        self.use_hflip, self.use_rot = bool(use_hflip), bool(use_rot)
        excl = {str(e) for e in exclude}
        if isinstance(root, str | Path):
            self.root: Path | None = Path(root)
            files = list_images(self.root, recursive=recursive)
            where = f"data folder {self.root}"
        else:
            self.root = None
            files = [Path(f) for f in root]
            where = "data file list"
        files = [f for f in files if not is_excluded(f, self.root, excl)]
        if not files:
            raise TrainingError(
                f"{where} has no usable images (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}"
                + (f"; {len(excl)} name(s) excluded" if excl else "")
                + ")"
            )
        if check_files:
            check_readable(files, where)
        self.files: list[Path] = files
        if length is not None and length < 1:
            raise TrainingError(f"dataset length must be positive, got {length}")
        self.length = int(length) if length is not None else len(files)
        self._cache = _ImageCache(cache)
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self._init_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def image_index(self, index: int, epoch: int | None = None) -> int:
        """Which file (index into ``self.files``) item ``index`` of ``epoch`` crops from."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.files)
        block = index // n
        order = self._orders.get((epoch, block))
        if order is None:
            order = np.random.default_rng(item_seed(self.seed, _STREAM_ORDER, epoch, block)).permutation(n)
            if len(self._orders) > 64:
                self._orders.clear()
            self._orders[(epoch, block)] = order
        return int(order[index % n])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        epoch = self.epoch
        seed = item_seed(self.seed, _STREAM_ITEM, epoch, index)
        rng = np.random.default_rng(seed)
        img = self._cache.get(self.files[self.image_index(index, epoch)])
        crop = random_crop(img, self.gt_size, rng)
        (crop,) = random_augment([crop], rng, self.use_hflip, self.use_rot)
        gt = to_float01(crop)
        drawn: dict[str, Any] = {}
        lq = degrade(gt, rng, self.degradation, log=drawn)
        return {"gt": to_tensor(gt), "lq": to_tensor(lq), "index": int(index), "seed": seed, "light": "light" in drawn}


class PairedFolderDataset(_EpochMixin, Dataset):
    """Aligned LQ/GT pairs from two folders, matched by file stem (relative path without extension).

    GT must be ``scale`` times the LQ size (GT larger by less than ``scale`` pixels is cropped). With ``gt_size``
    set, aligned random crops (LQ crop ``gt_size // scale`` at ``(y, x)``, GT crop at ``(scale y, scale x)``) and the
    same flips for both; with ``gt_size=None`` whole images are returned. Unmatched files are listed in
    ``self.unmatched``.
    """

    def __init__(
        self,
        lq_dir: str | Path,
        gt_dir: str | Path,
        gt_size: int | None = 256,
        scale: int = 4,
        seed: int = 0,
        exclude: Iterable[str] = (),
        length: int | None = None,
        use_hflip: bool = True,
        use_rot: bool = True,
        cache: bool = True,
        recursive: bool = True,
        check_files: bool = True,
        epoch: int = 0,
    ) -> None:
        if gt_size is not None:
            _check_gt_size(gt_size, scale)
        self.gt_size, self.scale, self.seed = gt_size, int(scale), int(seed)
        self.use_hflip, self.use_rot = bool(use_hflip), bool(use_rot)
        self.lq_dir, self.gt_dir = Path(lq_dir), Path(gt_dir)
        excl = {str(e) for e in exclude}

        def by_stem(root: Path) -> dict[str, Path]:
            out: dict[str, Path] = {}
            for p in list_images(root, recursive=recursive):
                if is_excluded(p, root, excl):
                    continue
                key = p.relative_to(root).with_suffix("").as_posix()
                if key in out:
                    raise TrainingError(
                        f"{root}: two images share the name {key!r} ({out[key].name}, {p.name})"
                    )
                out[key] = p
            return out

        lq, gt = by_stem(self.lq_dir), by_stem(self.gt_dir)
        keys = sorted(set(lq) & set(gt))
        self.unmatched = sorted(set(lq) ^ set(gt))
        if not keys:
            raise TrainingError(
                f"no LQ/GT pairs: {self.lq_dir} ({len(lq)} images) and {self.gt_dir} ({len(gt)} images) "
                "share no file names (pairs are matched by name without extension)"
            )
        self.pairs: list[tuple[Path, Path]] = [(lq[k], gt[k]) for k in keys]
        self.names = keys
        if check_files:
            check_readable(
                [p for pair in self.pairs for p in pair], f"paired folders {self.lq_dir}, {self.gt_dir}"
            )
        if length is not None and length < 1:
            raise TrainingError(f"dataset length must be positive, got {length}")
        self.length = int(length) if length is not None else len(self.pairs)
        self._cache = _ImageCache(cache)
        self._init_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def _load_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lq_path, gt_path = self.pairs[i]
        lq, gt = self._cache.get(lq_path), self._cache.get(gt_path)
        (lh, lw), (gh, gw), s = lq.shape[:2], gt.shape[:2], self.scale
        if not (lh * s <= gh < (lh + 1) * s and lw * s <= gw < (lw + 1) * s):
            raise TrainingError(
                f"pair {self.names[i]!r}: GT {gw}x{gh} is not {s}x the LQ {lw}x{lh} ({lq_path}, {gt_path})"
            )
        return lq, gt[: lh * s, : lw * s]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        epoch = self.epoch
        seed = item_seed(self.seed, _STREAM_PAIRED, epoch, index)
        rng = np.random.default_rng(seed)
        n = len(self.pairs)
        order = np.random.default_rng(item_seed(self.seed, _STREAM_ORDER, epoch, index // n)).permutation(n)
        lq, gt = self._load_pair(int(order[index % n]))
        s = self.scale
        if self.gt_size is not None:
            ls = self.gt_size // s
            lq = pad_to_min(lq, ls, ls)
            gt = pad_to_min(gt, ls * s, ls * s)
            lh, lw = lq.shape[:2]
            y, x = int(rng.integers(0, lh - ls + 1)), int(rng.integers(0, lw - ls + 1))
            lq, gt = lq[y : y + ls, x : x + ls], gt[y * s : (y + ls) * s, x * s : (x + ls) * s]
        lq, gt = random_augment([lq, gt], rng, self.use_hflip, self.use_rot)
        return {"gt": to_tensor(gt), "lq": to_tensor(lq), "index": int(index), "seed": seed, "light": False}


class ValidationSet(Dataset):
    """Fixed LQ/GT pairs for validation: centre GT crops, each degraded with a seed fixed by its file name.

    ``root_or_files`` is a folder or a list of files (e.g. the ``holdout`` of `split_holdout`). With
    ``gt_size=None`` the whole image (cropped to a multiple of ``scale``) is used. Items add ``"name"``.
    Pairs are computed once, lazily, and kept.
    """

    def __init__(
        self,
        root_or_files: str | Path | Sequence[str | Path],
        gt_size: int | None = 256,
        degradation: DegradationConfig | Mapping[str, Any] | None = None,
        seed: int = 0,
        scale: int = 4,
        check_files: bool = True,
    ) -> None:
        if gt_size is not None:
            _check_gt_size(gt_size, scale)
        self.gt_size, self.scale, self.seed = gt_size, int(scale), int(seed)
        self.degradation = _resolve_degradation(degradation, scale)
        if isinstance(root_or_files, str | Path):
            files = list_images(root_or_files)
            where = f"validation folder {root_or_files}"
        else:
            files = [Path(f) for f in root_or_files]
            where = "validation file list"
        if not files:
            raise TrainingError(f"{where} has no images")
        if check_files:
            check_readable(files, where)
        self.files = files
        self._items: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.files):
            raise IndexError(f"index {index} out of range for a validation set of {len(self.files)}")
        item = self._items.get(index)
        if item is None:
            path = self.files[index]
            img = read_samples(path)
            if self.gt_size is not None:
                img = center_crop(img, self.gt_size, self.gt_size)
            else:
                s = self.scale
                img = img[: img.shape[0] // s * s, : img.shape[1] // s * s]
            seed = item_seed(self.seed, _STREAM_VAL, zlib.crc32(path.name.encode("utf-8")))
            gt = to_float01(img)
            drawn: dict[str, Any] = {}
            lq = degrade(gt, np.random.default_rng(seed), self.degradation, log=drawn)
            item = {
                "gt": to_tensor(gt),
                "lq": to_tensor(lq),
                "index": int(index),
                "seed": seed,
                "light": "light" in drawn,
                "name": path.name,
            }
            self._items[index] = item
        return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in item.items()}


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker (the workers are the parallelism).

    OpenCV's thread count is deliberately left alone: ``cv2.setNumThreads`` in a forked worker can deadlock on the
    thread pool inherited from the parent (seen with OpenCV 5, pthreads backend).
    """
    del worker_id
    torch.set_num_threads(1)
