"""Which files are training data: listing image folders, probing them, and the fixed hold-out splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tadsr_cli.base.errors import InputError, TrainingError
from tadsr_cli.pipeline.image_read import IMAGE_EXTENSIONS, check_header

# Stream tag of the seeded hold-out split (the value it always had: changing it would change existing splits).
_STREAM_HOLDOUT = 0x5EED_0003

# Hold-out split of ``../shared/data/train-hr`` (26 photos): ``split_holdout(sorted names, 4, seed=None)``, i.e.
# sorted names (Python's order: upper case first) at positions 3, 9, 16, 22, every ~6.5th, so the validation
# images are spread over the set.
TRAIN_HR_HOLDOUT: tuple[str, ...] = (
    "Dragonfly_by_Bolly.jpg",
    "Picture_0B_by_freespace.jpg",
    "YellowFlower.jpg",
    "life_by_Aitzol_Berasategi.jpg",
)

# Hold-out split of ``../shared/data/train-hr-extra`` (362 photos): the sorted names at positions 11, 34, 57, ...
# (every 23rd, ``sorted(names)[11::23]``), so the 16 whole photos spread over its packages in proportion
# (budgie, endless-sky, kphotoalbum, krank, lifeograph, palapeli). Never trained on; the embedded models' numbers
# are measured on them and on TRAIN_HR_HOLDOUT (benchmarks/make_heldout_sets.py).
TRAIN_HR_EXTRA_HOLDOUT: tuple[str, ...] = (
    "budgie-backgrounds__roman-colosseum.jpg",
    "endless-sky-high-dpi__beach6@2x.jpg",
    "endless-sky-high-dpi__canyon5@2x.jpg",
    "endless-sky-high-dpi__desert1@2x.jpg",
    "endless-sky-high-dpi__fields13-sfiera@2x.jpg",
    "endless-sky-high-dpi__hills1@2x.jpg",
    "endless-sky-high-dpi__mountain10-sfiera@2x.jpg",
    "endless-sky-high-dpi__mountain9@2x.jpg",
    "endless-sky-high-dpi__sea14-sfiera@2x.jpg",
    "endless-sky-high-dpi__snow11-sfiera@2x.jpg",
    "endless-sky-high-dpi__valley10-sfiera@2x.jpg",
    "kphotoalbum__bar55.jpg",
    "krank__bonus-01.jpg",
    "krank__level-23.jpg",
    "lifeograph__sands.jpg",
    "palapeli-data__cincinnati-bridge.jpg",
)


def list_images(root: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (by extension, case-insensitive; hidden files skipped), sorted by relative path."""
    root = Path(root)
    if not root.exists():
        raise TrainingError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise TrainingError(f"data path {root} is not a folder")
    pattern = root.rglob("*") if recursive else root.glob("*")
    files = [
        p
        for p in pattern
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _probe(path: Path) -> str | None:
    """None if the file passes the reader's header check (no size limit, as the data is read), else the reason."""
    try:
        check_header(path, max_pixels=None)
    except InputError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return None


def check_readable(files: Sequence[Path], where: str) -> None:
    bad = [(p, why) for p in files if (why := _probe(p)) is not None]
    if bad:
        shown = "; ".join(f"{p.name}: {why}" for p, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise TrainingError(f"{where}: {len(bad)} unreadable image file(s): {shown}{more}")


def is_excluded(path: Path, root: Path | None, exclude: set[str]) -> bool:
    if not exclude:
        return False
    keys = {path.name, path.stem, str(path)}
    if root is not None:
        keys.add(path.relative_to(root).as_posix())
    return bool(keys & exclude)


def split_holdout(
    files: Sequence[str | Path], n_holdout: int = 4, seed: int | None = None
) -> tuple[list[Any], list[Any]]:
    """Deterministic train/validation split spread over the sorted names: ``(train, holdout)``.

    Sorted by file name, then positions ``floor(offset + k * len/n)`` for ``k < n``; the offset is ``len/(2n)``
    when ``seed`` is None (centred) and drawn from ``seed`` otherwise. The inputs are returned unchanged (same types).
    """
    items = sorted(files, key=lambda f: (Path(f).name, str(f)))
    if n_holdout <= 0:
        return list(items), []
    if n_holdout >= len(items):
        raise TrainingError(f"cannot hold out {n_holdout} of {len(items)} images and keep any for training")
    stride = len(items) / n_holdout
    if seed is None:
        offset = int(stride // 2)
    else:
        offset = int(
            np.random.default_rng(np.random.SeedSequence([seed % 2**63, _STREAM_HOLDOUT])).integers(
                0, int(stride)
            )
        )
    picks = {int(offset + k * stride) for k in range(n_holdout)}
    holdout = [f for i, f in enumerate(items) if i in picks]
    train = [f for i, f in enumerate(items) if i not in picks]
    return train, holdout
