"""Video <-> clip tokens: clips, a frozen frame autoencoder, and patches in one small object.

``encode``: video ``(B, T, C, H, W)`` -> clips -> latents ``(B, K, F, c, h, w)`` -> tokens ``(B, K, F, N, D)``.
``decode`` is the inverse (exact for the identity autoencoder).

Derived in notebooks/01 (§ tokens).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .clips import clips_to_video, patch_grid, patchify, unpatchify, video_to_clips


class VideoTokenizer(nn.Module):
    """Turn videos into the patch tokens the transformer reads, and back.

    Args:
        autoencoder: an ``IdentityAutoencoder`` or a trained ``FrameAutoencoder`` (kept frozen).
        patch_size: p, in latent pixels.
        image_size: H = W of the frames.
    """

    def __init__(self, autoencoder: nn.Module, patch_size: int, image_size: int):
        super().__init__()
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.patch_size = patch_size
        self.image_size = image_size
        self.channels = autoencoder.in_channels
        c, h, w = autoencoder.latent_shape(image_size, image_size)
        self.latent_shape = (c, h, w)
        self.grid = patch_grid(h, w, patch_size)
        self.token_dim = c * patch_size * patch_size
        self.latent_inputs = False  # True: encode() receives latents (B, T, c, h, w) already (latent shards)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @torch.no_grad()
    def encode(self, video: torch.Tensor, frames_per_clip: int) -> torch.Tensor:
        """``(B, T, C, H, W)`` in [-1, 1] -> tokens ``(B, K, F, N, D)``.

        With ``latent_inputs`` set (training on latent shards of :mod:`minivgpt.prepare`) the input is the
        autoencoder's latents ``(B, T, c, h, w)`` and only clips and patches are made.
        """
        if self.latent_inputs:
            if tuple(video.shape[-3:]) != self.latent_shape:
                raise ValueError(f"latents must be (B, T, {self.latent_shape}), got {tuple(video.shape)}")
            return patchify(video_to_clips(video, frames_per_clip), self.patch_size)
        if video.shape[-1] != self.image_size or video.shape[-2] != self.image_size:
            raise ValueError(
                f"frames must be {self.image_size}x{self.image_size} for this tokenizer, got {tuple(video.shape)}"
            )
        latents = self.autoencoder.encode(video_to_clips(video, frames_per_clip))
        return patchify(latents, self.patch_size)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, K, F, N, D)`` -> video ``(B, K*F, C, H, W)``."""
        _, h, w = self.latent_shape
        latents = unpatchify(tokens, self.patch_size, h, w)
        return clips_to_video(self.autoencoder.decode(latents)).clamp(-1, 1)
