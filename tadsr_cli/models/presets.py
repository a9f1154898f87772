"""Named model configurations: the official real-SR network and small CPU-friendly members of the same family."""

from __future__ import annotations

from tadsr_cli.models.config import AutoencoderConfig, DenoiserConfig, ModelConfig, ScheduleConfig


def official_realsr_x4(steps: int = 15, min_noise_level: float = 0.04, name: str = "") -> ModelConfig:
    """The released ResShift/SinSR real-SR x4 network (Swin-UNet 118.59 M + LDM VQ-f4 55.32 M); the catalogue's
    released entries are built with it (`models/catalog.py`)."""
    return ModelConfig(
        denoiser=DenoiserConfig(),  # the config defaults are the released network's
        autoencoder=AutoencoderConfig(),
        schedule=ScheduleConfig(steps=steps, min_noise_level=min_noise_level),
        prediction="x0",
        name=name,
    )


def tiny_test_config(prediction: str = "residual") -> ModelConfig:
    """A very small Swin-UNet in the lossless pixel-unshuffle latent, for tests (LQ multiple 16, ~0.3 M params)."""
    return ModelConfig(
        denoiser=DenoiserConfig(
            image_size=64,
            in_channels=48,
            model_channels=32,
            out_channels=48,
            attention_resolutions=[32],
            channel_mult=[1, 2],
            num_res_blocks=[1, 1],
            num_head_channels=16,
            swin_depth=1,
            swin_embed_dim=32,
            window_size=8,
            mlp_ratio=2,
            lq_size=64,
        ),
        autoencoder=AutoencoderConfig.pixel_unshuffle(4),
        schedule=ScheduleConfig(steps=15),
        prediction=prediction,  # type: ignore[arg-type]
        name="tiny-test",
    )


def tiny_vq_test_config() -> ModelConfig:
    """Tiny denoiser over a tiny VQ autoencoder (3-channel latent), for tests of the VQ path."""
    cfg = tiny_test_config(prediction="x0")
    cfg.denoiser.in_channels = cfg.denoiser.out_channels = 3
    cfg.autoencoder = AutoencoderConfig(
        kind="vq", block_out_channels=[32, 32, 64], layers_per_block=1, num_vq_embeddings=64
    )
    cfg.name = "tiny-vq-test"
    return cfg
