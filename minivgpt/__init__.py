"""minivgpt: a small, honest reproduction of Video-GPT via Next Clip Diffusion."""

__version__ = "0.1.0"
