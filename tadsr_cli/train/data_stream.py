"""Training data of a run: the dataset a recipe describes, its validation set, and the resumable batch stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tadsr_cli.base.errors import RecipeError, TrainingError
from tadsr_cli.train.data_files import is_excluded, list_images, split_holdout
from tadsr_cli.train.datasets import HRFolderDataset, PairedFolderDataset, ValidationSet, worker_init_fn
from tadsr_cli.train.distributed import DistEnv
from tadsr_cli.train.recipe_schema import Recipe


class _EpochBatches(torch.utils.data.Sampler):
    """Batch sampler of one epoch for one rank, starting at a given batch; mutated between epochs."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class DataStream:
    """Endless micro-batches for one rank: epoch `e` covers dataset indices 0..L-1 (L a multiple of world*micro),
    rank `r` takes index `(b * micro + k) * world + r` for its batch `b`. Items depend on (seed, epoch, index) only,
    so the stream can restart at any micro-batch (`start`) and yields exactly what an uninterrupted run saw."""

    def __init__(
        self, dataset: Any, micro: int, env: DistEnv, workers: int, start: int = 0, fixed_epoch: bool = False,
        crop_reuse: int = 1, seed: int = 0,
    ) -> None:
        self.dataset, self.micro, self.env = dataset, micro, env
        self.fixed_epoch = fixed_epoch
        self.crop_reuse, self.seed = max(1, int(crop_reuse)), int(seed)
        length = len(dataset)
        self.per_epoch = length // (micro * env.world)
        if self.per_epoch < 1:
            raise TrainingError(
                f"the dataset has {length} items per epoch, fewer than one global micro-batch ({micro} x {env.world})"
            )
        self.position = start
        self._sampler = _EpochBatches()

        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self._sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=worker_init_fn if workers > 0 else None,
            pin_memory=env.device.type == "cuda",
            prefetch_factor=2 if workers > 0 else None,
        )
        self._it: Iterator | None = None

    def _start_epoch(self) -> None:
        epoch, first = divmod(self.position, self.per_epoch)
        w, r, m = self.env.world, self.env.rank, self.micro
        slots = np.arange(self.per_epoch * m * w)
        if self.crop_reuse > 1:
            # The same crops again: batch them differently (a permutation that depends on the epoch only, so a
            # resumed run sees the same batches).
            slots = np.random.default_rng([self.seed % 2**63, 0x5EED_0005, epoch]).permutation(slots)
        self._sampler.batches = [
            [int(slots[(b * m + k) * w + r]) for k in range(m)] for b in range(first, self.per_epoch)
        ]
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(0 if self.fixed_epoch else epoch // self.crop_reuse)
        self._it = iter(self.loader)

    def next(self) -> dict[str, Any]:
        if self._it is None or self.position % self.per_epoch == 0:
            self._start_epoch()
        assert self._it is not None
        batch = next(self._it)
        self.position += 1
        return batch

    def close(self) -> None:
        self._it = None


def _hr_folders(recipe: Recipe) -> list[Path]:
    hr = recipe.data.hr
    return [Path(h) for h in ([hr] if isinstance(hr, str) else list(hr or []))]


def split_train_files(recipe: Recipe) -> tuple[list[Path], list[Path]]:
    """HR training files (exclude list applied) and the held-out files (`data.holdout`), for `hr` data."""

    excl = {str(e) for e in recipe.data.exclude}
    files: list[Path] = []
    for folder in _hr_folders(recipe):
        files += [f for f in list_images(folder) if not is_excluded(f, folder, excl)]
    if not files:
        where = ", ".join(str(f) for f in _hr_folders(recipe))
        raise TrainingError(
            f"data folder {where} has no usable images" + (" (after exclusions)" if excl else "")
        )
    if recipe.data.holdout:
        train_files, held = split_holdout(files, recipe.data.holdout)
        return list(train_files), list(held)
    return files, []


def build_train_dataset(recipe: Recipe, scale: int, micro: int, world: int) -> Any:
    """The training dataset; its length is rounded up to a multiple of one global micro-batch (micro x world)."""

    d = recipe.data
    unit = micro * world
    if d.hr is not None:
        files, _ = split_train_files(recipe)
        length = d.length or len(files)
        length = -(-length // unit) * unit
        return HRFolderDataset(
            files,
            gt_size=d.gt_size,
            scale=scale,
            degradation=recipe.degradation_config(),
            seed=recipe.seed,
            length=length,
        )
    probe = PairedFolderDataset(
        d.lq, d.gt, gt_size=d.gt_size, scale=scale, seed=recipe.seed, exclude=d.exclude, check_files=False
    )
    length = -(-(d.length or len(probe.pairs)) // unit) * unit
    return PairedFolderDataset(
        d.lq, d.gt, gt_size=d.gt_size, scale=scale, seed=recipe.seed, exclude=d.exclude, length=length
    )


def build_validation_set(recipe: Recipe, scale: int, lq_multiple: int) -> Any | None:
    """Fixed validation pairs: `validation.files` of `validation.folder` (default: the HR folder), all images of
    `validation.folder`, or the `data.holdout` files; None when there is nothing to validate on."""

    v = recipe.validation
    if v.n_images == 0:
        return None
    if v.lq_size % lq_multiple:
        raise RecipeError(
            f"{recipe.source}: validation.lq_size {v.lq_size} must be a multiple of {lq_multiple}"
        )
    files: list[Path] = []
    if v.files:
        folder = (
            Path(v.folder) if v.folder else (_hr_folders(recipe)[0] if recipe.data.hr is not None else None)
        )
        if folder is None:
            raise RecipeError(f"{recipe.source}: validation.files needs validation.folder (paired data)")
        files = [folder / f for f in v.files]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise TrainingError(f"validation files not found: {', '.join(missing)}")
    elif v.folder:
        files = list_images(v.folder)
    elif recipe.data.hr is not None and recipe.data.holdout:
        files = split_train_files(recipe)[1]
    if not files:
        return None
    files = files[: v.n_images]
    return ValidationSet(
        files, gt_size=v.lq_size * scale, degradation=recipe.degradation_config(), seed=v.seed, scale=scale
    )
