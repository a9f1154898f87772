"""The training data stream: fresh crops each epoch, or a rolling pool (`data.crop_reuse`) batched anew each pass."""

from __future__ import annotations

import torch

from tadsr_cli.train.data_stream import DataStream
from tadsr_cli.train.distributed import DistEnv


class EpochItems(torch.utils.data.Dataset):
    """Item `i` of crop-epoch `e` is the number 1000 * e + i (what a crop's seed stands for)."""

    def __init__(self, length: int) -> None:
        self.length, self.epoch = length, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> int:
        return 1000 * self.epoch + i


def _epochs(reuse: int, n_epochs: int = 4, length: int = 8, micro: int = 2, start: int = 0) -> list[list[list[int]]]:
    env = DistEnv(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    stream = DataStream(EpochItems(length), micro, env, workers=0, start=start, crop_reuse=reuse, seed=7)
    per_epoch = length // micro
    batches = [stream.next().tolist() for _ in range(n_epochs * per_epoch - start)]
    batches = [[-1]] * start + batches
    return [batches[e * per_epoch:(e + 1) * per_epoch] for e in range(n_epochs)]


def _items(epoch: list[list[int]]) -> list[int]:
    return sorted(x for b in epoch for x in b)


def test_fresh_crops_every_epoch_by_default():
    epochs = _epochs(reuse=1)
    assert [_items(e)[0] // 1000 for e in epochs] == [0, 1, 2, 3]


def test_crop_reuse_serves_each_crop_twice_in_new_batches():
    epochs = _epochs(reuse=2)
    assert _items(epochs[0]) == _items(epochs[1]) == list(range(8))
    assert _items(epochs[2]) == _items(epochs[3]) == [1000 + i for i in range(8)]
    assert epochs[0] != epochs[1] and epochs[2] != epochs[3]  # batched in a new order


def test_crop_reuse_resumes_exactly():
    whole = _epochs(reuse=2)
    resumed = _epochs(reuse=2, start=5)  # restart mid-epoch 1
    flat = [b for e in whole for b in e]
    assert [b for e in resumed for b in e][5:] == flat[5:]
