"""Which metrics `tadsr eval` reports, and the suite that measures one output (building each metric network once)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tadsr_cli.base.errors import CheckpointError, InputError
from tadsr_cli.eval.lpips_optional import LPIPSMetric
from tadsr_cli.eval.niqe import PristineModel, load_pristine, niqe
from tadsr_cli.eval.psnr_ssim import psnr, ssim
from tadsr_cli.eval.stlpips import MetricUnavailable, STLPIPSMetric


@dataclass(frozen=True)
class MetricInfo:
    key: str
    label: str
    higher_is_better: bool
    full_reference: bool
    description: str


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("psnr_y", "PSNR-Y", True, True, "dB, BT.601 Y (16-235), border crop = scale"),
    MetricInfo("ssim_y", "SSIM-Y", True, True, "BT.601 Y, 11x11 Gaussian sigma 1.5, border crop = scale"),
    MetricInfo("st_lpips", "ST-LPIPS", False, True, "shift-tolerant LPIPS, AlexNet (stlpips-pytorch vST0.0), full image"),
    MetricInfo("lpips", "LPIPS", False, True, "LPIPS v0.1 AlexNet (lpips package), full image"),
    MetricInfo("niqe", "NIQE", False, False, "no-reference, Y channel, 96x96 blocks, crop 0 (BasicSR settings)"),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


class MetricSuite:
    """Builds the metric networks once; `status[key]` is None when a metric runs, else the reason it does not."""

    def __init__(self, device: torch.device, has_gt: bool, use_lpips: bool = True, use_niqe: bool = True) -> None:
        self.status: dict[str, str | None] = {}
        self.st: STLPIPSMetric | None = None
        self.lp: LPIPSMetric | None = None
        self.niqe_model: PristineModel | None = None
        self.stlpips_weights: str | None = None
        no_gt = "no ground truth (--gt) given"
        self.status["psnr_y"] = None if has_gt else no_gt
        self.status["ssim_y"] = None if has_gt else no_gt
        if not has_gt:
            self.status["st_lpips"] = no_gt
        else:
            try:
                self.st = STLPIPSMetric(device=device)
                self.stlpips_weights = str(self.st.weights_path)
                self.status["st_lpips"] = None
            except (MetricUnavailable, CheckpointError) as exc:
                self.status["st_lpips"] = str(exc)
        if not has_gt:
            self.status["lpips"] = no_gt
        elif not use_lpips:
            self.status["lpips"] = "disabled (--no-lpips)"
        else:
            try:
                self.lp = LPIPSMetric(device=device)
                self.status["lpips"] = None
            except MetricUnavailable as exc:
                self.status["lpips"] = str(exc)
        if not use_niqe:
            self.status["niqe"] = "disabled (--no-niqe)"
        else:
            try:
                self.niqe_model = load_pristine()
                self.status["niqe"] = None
            except InputError as exc:
                self.status["niqe"] = str(exc)

    def measure(self, sr: np.ndarray, gt: np.ndarray | None, border: int) -> tuple[dict[str, float | None], list[str]]:
        values: dict[str, float | None] = {m.key: None for m in METRICS}
        notes: list[str] = []
        if gt is not None:
            values["psnr_y"] = psnr(sr, gt, crop_border=border)
            values["ssim_y"] = ssim(sr, gt, crop_border=border)
            for key, fn in (("st_lpips", self.st), ("lpips", self.lp)):
                if fn is None:
                    continue
                try:
                    values[key] = fn(sr, gt)
                except RuntimeError as exc:  # e.g. an image too small for the network's padding
                    notes.append(f"{key}: {exc}")
        if self.niqe_model is not None:
            try:
                values["niqe"] = niqe(sr, crop_border=0, model=self.niqe_model)
            except InputError as exc:
                notes.append(f"niqe: {exc}")
        return values, notes
