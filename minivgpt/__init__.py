"""minivgpt: a small, honest reproduction of Video-GPT via Next Clip Diffusion (Zhuang et al., ICLR 2026,
arXiv:2505.12489).

The method in short is docs/paper.md; which module owns what is docs/design.md; notebooks/01-08 derive each
piece and check their derivation against the library.
"""

__version__ = "0.1.0"
