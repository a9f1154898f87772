"""tadsr: one-step diffusion super-resolution (TAD-SR) for images and video."""

__version__ = "0.1.0"
