"""Small helpers shared by the notebooks: where runs live, and the CI switch for tiny parameters.

Every notebook starts with a ``parameters`` cell (papermill). When the environment variable
``MINIVGPT_CI=1`` is set (``make test`` sets it), :func:`ci_overrides` shrinks the parameters to tiny
values so that CI executes the whole notebook in seconds; full-size runs are the same notebook with
other parameters (``papermill NB.ipynb out.ipynb -p steps 5000``), never a second copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def is_ci() -> bool:
    """True when notebooks should run with tiny parameters (``MINIVGPT_CI=1``)."""
    return os.environ.get("MINIVGPT_CI", "0") == "1"


def runs_dir(name: str = "") -> Path:
    """``<repo>/runs/<name>`` (git-ignored), created if needed; the same folder from any working directory.

    In CI mode it is ``<repo>/runs/ci/<name>``, so the tiny CI runs never overwrite a real run that a
    later notebook would load.
    """
    path = ROOT / "runs" / ("ci" if is_ci() else "") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def ci_overrides(namespace: dict[str, Any], **tiny: Any) -> dict[str, Any]:
    """In CI mode, overwrite the given parameters in ``namespace`` (``globals()`` or a params dict) with tiny values.

    Returns the parameters that were changed (empty outside CI). Unknown names are an error, so a
    renamed parameter cannot silently escape the CI shrink.
    """
    missing = [k for k in tiny if k not in namespace]
    if missing:
        raise KeyError(f"ci_overrides names parameters the notebook does not define: {missing}")
    if not is_ci():
        return {}
    namespace.update(tiny)
    return dict(tiny)


def snapshot_names(namespace: dict[str, Any]) -> set[str]:
    """Names defined before a notebook's ``parameters`` cell (pass ``globals()``)."""
    return set(namespace)


def collect_params(namespace: dict[str, Any], before: set[str]) -> dict[str, Any]:
    """The parameters a notebook defined or papermill injected since ``before``, checked against the config.

    Every new public name must be a training config key (:func:`minivgpt.config.valid_keys`); an unknown
    one (a typo in ``papermill -p stepz 10``) raises with the closest valid name.
    """
    from .config import unknown_key_message, valid_keys

    valid = valid_keys()
    names = [n for n in namespace if n not in before and not n.startswith("_")]
    for n in names:
        if n not in valid:
            raise ValueError(unknown_key_message(n, list(valid)))
    return {n: namespace[n] for n in names}


def resolve_out(path: str) -> str:
    """A relative ``out=`` folder is taken from the repository root, wherever the notebook runs."""
    p = Path(path)
    return str(p if p.is_absolute() else ROOT / p)


def backbone_folders(run: str = "") -> list[Path]:
    """Where a transfer notebook finds its backbone: ``[run]`` when given (relative to the repository root,
    and it must hold a ``last.pt``), else ``runs/pretrain`` then ``runs/nb04``
    (:func:`minivgpt.backbone.load_or_train_backbone` takes the first that exists).

    Raises ``FileNotFoundError`` naming the folder when a given ``run`` holds no checkpoint, rather than
    quietly training a fallback in its place.
    """
    if not run:
        return [runs_dir("pretrain"), runs_dir("nb04")]
    folder = Path(resolve_out(run))
    if not (folder / "last.pt").exists():
        raise FileNotFoundError(
            f"backbone_run={run!r}: no last.pt in {folder}; give a trained run (e.g. make pretrain's runs/pretrain) "
            "or leave it empty for runs/pretrain, then runs/nb04"
        )
    return [folder]


# the layers a VideoGPT initialises to zero (adaLN-Zero): the per-block modulation, the output modulation
# and the output projection. With them at zero every block is the identity and the output is constant.
ZERO_INIT_LAYERS = ("ada", "ada_out", "out")


def open_gates(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model`` whose zero-initialised layers (adaLN gates and modulation, the output projection)
    get a seeded random init (PyTorch's default ``nn.Linear`` init), so that every block changes its input.

    Equality checks (cache against recomputation, a network written by hand against the library) are run on
    such a model: on a freshly built or barely trained VideoGPT the gates are (near) zero, every output is the
    same constant, and "equal" would hold for any attention pattern.
    """
    import copy

    probe = copy.deepcopy(model)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for name, module in probe.named_modules():
            # a layer named in ZERO_INIT_LAYERS, or a layer inside one (out.0 and out.2 of an MLP head)
            if isinstance(module, torch.nn.Linear) and set(name.split(".")) & set(ZERO_INIT_LAYERS):
                module.reset_parameters()
    finally:
        torch.random.set_rng_state(gen_state)
    return probe


def assert_not_constant(x: torch.Tensor, dim: int = 0, eps: float = 1e-3, what: str = "output") -> float:
    """Raise unless ``x`` varies along ``dim`` (std over that axis, averaged, above ``eps``); returns that std.

    Guards an equality check against passing trivially on a model whose output ignores its input.
    """
    spread = x.float().std(dim=dim).mean().item()
    if not spread > eps:
        raise AssertionError(
            f"{what} is (nearly) constant along dim {dim} (mean std {spread:.2e} <= {eps}): an equality check on "
            f"it would pass trivially; use open_gates(model) for the check"
        )
    return spread


# ---------------------------------------------------------------------------------------------------------
# Exercise checks. Every notebook ends with exercises framed as the paper's choices; each has a cell that calls
# one of these with the learner's answer. An answer still ``None`` is "not attempted" (the cell says so and
# moves on, so the notebook runs top to bottom); a wrong answer raises ``ExerciseError`` with a hint; a right
# one prints why it is right. The worked answers are in notebooks/solutions/ (executed in CI).


class ExerciseError(AssertionError):
    """A learner's answer to an exercise is wrong; the message holds a hint."""


def _pending(*answers: Any) -> bool:
    if any(a is None for a in answers):
        print("not attempted yet: fill in the answer above and run this cell again (solutions: notebooks/solutions/)")
        return True
    return False


def _require(ok: bool, hint: str) -> None:
    if not ok:
        raise ExerciseError(hint)


def check_t_per_video(t_per_video: Any, predicted_ratio: float | None, num_clips: int = 4) -> float | None:
    """Notebook 02, exercise 1. ``t_per_video(B, K, generator) -> (B, K)`` draws one t ~ U(0, 1) per video;
    ``predicted_ratio``: by how much the spread (std over batches) of a batch's mean noise level grows when every
    video has one t instead of one per clip. Returns the measured ratio."""
    if _pending(t_per_video, predicted_ratio):
        return None
    g = torch.Generator().manual_seed(0)
    t = t_per_video(64, num_clips, g)
    _require(
        torch.is_tensor(t) and tuple(t.shape) == (64, num_clips),
        f"t_per_video(64, {num_clips}, g) must be a (64, {num_clips}) tensor",
    )
    _require(bool((t >= 0).all() and (t <= 1).all()), "noise levels live in [0, 1]")
    _require(bool((t == t[:, :1]).all()), "one t per video: every clip of a video (a row) must have the same t")
    _require(t[:, 0].unique().numel() > 32, "each video must draw its own t (the rows are not all equal)")
    _require(abs(t.mean().item() - 0.5) < 0.1, "t should be uniform on [0, 1] (mean about 0.5)")
    trials = [t_per_video(64, num_clips, g).mean().item() for _ in range(400)]
    per_clip = [torch.rand(64, num_clips, generator=g).mean().item() for _ in range(400)]
    measured = float(torch.tensor(trials).std() / torch.tensor(per_clip).std())
    _require(
        abs(float(predicted_ratio) - measured) < 0.2 * measured,
        f"measured ratio {measured:.2f}; hint: the batch mean of per-clip t averages B*K independent draws, the "
        f"per-video one only B; the std of a mean of n draws scales as 1/sqrt(n)",
    )
    print(
        f"right: one t per video makes a batch's mean noise level {measured:.2f}x as spread (sqrt(K) = "
        f"{num_clips**0.5:.2f}): per-clip t trains every prefix length at independent levels in every step"
    )
    return measured


def check_leaky_mask(leaky_mask: Any, cache_exact: bool | None, K: int = 3, F: int = 2, N: int = 4) -> float | None:
    """Notebook 03, exercise. ``leaky_mask(K, F, N) -> (L, L)`` bool: the hierarchical mask, except that a noisy
    clip may also read the noisy copies of the clips before it; ``cache_exact``: does a rollout from the clean
    history (the KV cache) still give the prediction that training optimised? Returns the measured gap."""
    if _pending(leaky_mask, cache_exact):
        return None
    from .config import ModelConfig
    from .masks import hierarchical_mask
    from .model import VideoGPT, sdpa
    from .sequence import interleave, token_layout

    lay = token_layout(K, F, N)
    m = leaky_mask(K, F, N)
    ref = hierarchical_mask(K, F, N)
    _require(
        torch.is_tensor(m) and m.dtype == torch.bool and m.shape == ref.shape,
        f"return a bool mask of shape {tuple(ref.shape)}",
    )
    qn, kn = lay.is_noisy[:, None], lay.is_noisy[None, :]
    qc, kc = lay.clip[:, None], lay.clip[None, :]
    _require(
        bool((m == ref)[~(qn & kn)].all()),
        "only noisy -> noisy pairs change; every other pair keeps the rule of masks.allowed",
    )
    _require(bool(m[qn & kn & (kc < qc)].all()), "a noisy clip must now read the noisy copies of every earlier clip")
    _require(not bool(m[qn & kn & (kc > qc)].any()), "still causal across clips: no noisy clip reads a later one")
    _require(bool(m[qn & kn & (kc == qc)].all()), "a noisy clip still reads all of itself")
    model = open_gates(VideoGPT(ModelConfig(width=32, depth=2, heads=4), in_dim=6, grid=(1, N)), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, K, F, N, 6, generator=g)
    noisy = torch.randn(1, K, F, N, 6, generator=g)
    t_seg = torch.stack([torch.full((1, K), 0.3), torch.ones(1, K)], -1).reshape(1, 2 * K)
    with torch.no_grad():
        outs = [model.head(*model.run(interleave(noisy, x), lay, t_seg, sdpa(mk))[:2])[:, -2] for mk in (ref, m)]
        cached = model.denoise(noisy[:, -1], torch.full((1,), 0.3), model.prefill(x[:, :-1]))
    exact = (outs[0].flatten(1) - cached.flatten(1)).abs().max().item()
    gap = (outs[1].flatten(1) - cached.flatten(1)).abs().max().item()
    _require(exact < 1e-4, f"internal check failed: the true mask should match the cached rollout ({exact:.1e})")
    _require(
        cache_exact is False,
        f"under your mask the last clip's training prediction differs from the cached rollout's by {gap:.2f}: hint: "
        f"at rollout the earlier clips exist only as clean history; their noisy copies are never made",
    )
    print(
        f"right: with the true mask training and the cached rollout agree ({exact:.1e}); letting noisy clips read "
        f"earlier noisy clips changes the prediction by {gap:.2f}, which no cache of the clean history reproduces"
    )
    return gap


def check_x_vs_v(v_from_x: Any, loss_weight: Any, seed: int = 0) -> None:
    """Notebook 04, exercise. ``v_from_x(x_hat, x_t, t)``: the velocity a clean prediction implies;
    ``loss_weight(t)``: w(t) with ``mean((x_hat - x)^2) = w(t) * mean((v_hat - v)^2)`` per clip."""
    if _pending(v_from_x, loss_weight):
        return None
    from .diffusion import add_noise, velocity

    g = torch.Generator().manual_seed(seed)
    x, eps, xh = (torch.randn(4, 3, 2, 5, generator=g) for _ in range(3))
    t = torch.rand(4, generator=g) * 0.9
    x_t = add_noise(x, t, eps)
    v = v_from_x(xh, x_t, t)
    _require(torch.is_tensor(v) and v.shape == xh.shape, "v_from_x returns a tensor of the shape of x_hat")
    _require(
        torch.allclose(v_from_x(x, x_t, t), x - eps, atol=1e-4),
        "with the true x, the velocity of the straight path is x - eps",
    )
    _require(
        torch.allclose(v, velocity(x_t, xh, t), atol=1e-4),
        "hint: x_t lies on the line from eps (t = 0) to x_hat (t = 1)",
    )
    lhs = (xh - x).pow(2).flatten(1).mean(1)
    rhs = (v - (x - eps)).pow(2).flatten(1).mean(1)
    w = torch.as_tensor(loss_weight(t), dtype=torch.float32)
    _require(
        w.shape == t.shape and torch.allclose(lhs, w * rhs, rtol=1e-3, atol=1e-6),
        "hint: x_hat - x = (1 - t) (v_hat - v); the loss on x weights the v-loss by a function of t",
    )
    print(
        "right: predicting x is predicting v with the loss weighted by (1 - t)^2, which down-weights the nearly "
        "clean clips (t -> 1)"
    )


def check_history_mse(history_mse: Any, seed: int = 0) -> dict[float, float] | None:
    """Notebook 04, exercise 2. ``history_mse(history_noise, x_var)``: the expected per-element squared distance
    between the history the model reads in training (clean clips noised to ``t_clean ~ U(history_noise, 1)``
    with unit Gaussian noise) and the clean clips, for clean tokens of mean 0 and variance ``x_var``. Checked
    against the library's draw (``RectifiedFlow.draw`` and ``add_noise``); returns the measured values."""
    if _pending(history_mse):
        return None
    from .diffusion import RectifiedFlow, add_noise

    measured = {}
    for h, x_var in ((1.0, 1.0), (0.9, 1.0), (0.9, 0.25), (0.5, 1.0)):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(4096, 2, 1, 1, 8, generator=g) * x_var**0.5
        r = RectifiedFlow(history_noise=h).draw(tuple(x.shape), generator=g)
        got = (add_noise(x, r["t_clean"], r["history_noise"]) - x).pow(2).mean().item()
        want = float(history_mse(h, x_var))
        _require(
            abs(want - got) <= 0.05 * got + 1e-6,
            f"history_mse({h}, {x_var}) = {want:.5f}, but the library's draw gives {got:.5f}: hint: the history is "
            f"x + (1 - t_clean) (eps - x), and 1 - t_clean is uniform on [0, 1 - history_noise]",
        )
        if x_var == 1.0:
            measured[h] = got
    print(
        f"right: with history_noise 1.0 the history is exact (0), with 0.9 it is {measured[0.9]:.4f} away from the "
        f"clean clips per element (for unit-variance tokens): the model trains on a slightly wrong history"
    )
    return measured


def check_guidance_sweep(sweep: dict[float, float] | None, best_scale: float | None, reference_mse: float) -> None:
    """Notebook 05, exercise. ``sweep``: guidance scale -> forecast MSE on the notebook's held-out videos (same
    starting noise), including 1.0; ``best_scale``: the scale with the lowest MSE; ``reference_mse``: the
    notebook's cfg 1.0 score."""
    if _pending(sweep, best_scale):
        return None
    _require(
        isinstance(sweep, dict) and len(sweep) >= 3, "sweep at least three scales, e.g. {1.0: ..., 1.5: ..., 3.0: ...}"
    )
    _require(1.0 in sweep, "include scale 1.0 (no guidance) as the reference")
    _require(
        abs(sweep[1.0] - reference_mse) <= 1e-4 * max(1.0, reference_mse),
        f"your MSE at scale 1.0 is {sweep[1.0]:.5f} but the notebook's is {reference_mse:.5f}: use the same "
        f"videos, window and generator (gen()) for every scale",
    )
    best = min(sweep, key=sweep.get)
    _require(best_scale == best, f"the lowest MSE in your sweep is at scale {best}")
    print(f"right: on these videos the best scale is {best} (MSE {sweep[best]:.4f} against {sweep[1.0]:.4f} unguided)")


def _window_positions(context_clips: int, predict_clips: int, window: int) -> list[list[int]]:
    return [list(range(max(0, k - window), k + 1)) for k in range(context_clips, context_clips + predict_clips)]


def check_window_positions(positions_seen: Any, noisy_position_w1: int | None) -> None:
    """Notebook 05, exercise. ``positions_seen(context_clips, predict_clips, window)``: for every generated clip,
    the list of video clip indices the model reads (the window of history, then the new clip);
    ``noisy_position_w1``: the position index the noisy clip gets when ``window=1``."""
    if _pending(positions_seen, noisy_position_w1):
        return None
    for args in ((2, 4, 3), (2, 4, 1), (1, 3, 8), (3, 5, 2)):
        got = positions_seen(*args)
        _require(
            [list(r) for r in got] == _window_positions(*args),
            f"positions_seen{args} is wrong: hint: generating video clip k reads clips max(0, k - window) .. k - 1",
        )
    _require(noisy_position_w1 == 1, "with window=1 the history is one clip at position 0; where does the new clip go?")
    print(
        "right: with window=1 every clip is generated at position 1 from one clip of history: the model sees "
        "only one clip of motion, however long the video"
    )


def check_rank_indices(indices: Any, dataset_size: int = 100, batch_size: int = 8, seed: int = 0) -> None:
    """Notebook 08, exercise. ``indices(step, rank, world)``: the dataset indices that rank ``rank`` of ``world``
    trains on at ``step`` (global batch ``batch_size`` drawn by ``train.sample_batch``)."""
    if _pending(indices):
        return None
    from .train import step_generator

    for step, world in ((0, 1), (3, 2), (7, 4)):
        idx = torch.randint(dataset_size, (batch_size,), generator=step_generator(seed, step))
        local = batch_size // world
        for rank in range(world):
            want = idx[rank * local : (rank + 1) * local].tolist()
            got = [int(i) for i in indices(step, rank, world)]
            _require(
                got == want,
                f"step {step}, rank {rank} of {world}: expected {len(want)} indices, got {got}: hint: every "
                f"rank draws the whole global batch from step_generator(seed, step) and keeps its slice",
            )
    print(
        "right: every rank draws the same global batch and keeps its own slice, so N processes train on exactly "
        "the samples (and the noise) of one process"
    )


def check_tokens_per_frame(tokens_per_frame: Any, paper_tokens: int | None, paper_length: int | None) -> int | None:
    """Notebook 01, exercise. ``tokens_per_frame(H, W, downsample, patch)``: N, the patch tokens of one ``H x W``
    frame whose latent is ``downsample`` times smaller in each direction, cut into ``patch x patch`` patches;
    ``paper_tokens``: N for 256 x 256 frames with the paper's latents (VAE 8x down, patch 2); ``paper_length``:
    the training sequence L = 2 K F N of the paper's first stage (16 frames, one frame per clip) at that size.
    Returns the measured N."""
    if _pending(tokens_per_frame, paper_tokens, paper_length):
        return None
    from .clips import patch_grid

    def want(H: int, W: int, s: int, p: int) -> int:
        gh, gw = patch_grid(H // s, W // s, p)
        return gh * gw

    for args in ((32, 32, 1, 4), (32, 32, 4, 2), (64, 48, 8, 2), (128, 64, 4, 4)):
        got = tokens_per_frame(*args)
        _require(
            int(got) == want(*args),
            f"tokens_per_frame{args} = {got}: hint: the latent is (H/s) x (W/s); patches of p x p cut it into "
            f"(H/s/p) rows and (W/s/p) columns",
        )
    n = want(256, 256, 8, 2)
    _require(paper_tokens == n, "paper_tokens: 256 x 256 frames, latent 8x smaller, patches of 2 latent pixels")
    K, F = 16, 1
    _require(
        paper_length == 2 * K * F * n,
        "paper_length: 16 clips of one frame, a noisy and a clean copy of each, N tokens per frame (L = 2 K F N)",
    )
    pixels = want(256, 256, 1, 2)
    print(
        f"right: N = {n} tokens per frame and L = {2 * K * F * n} for the first stage; the same patches of 2 on "
        f"pixels would be {pixels} tokens per frame ({pixels // n}x more, attention {(pixels // n) ** 2}x dearer)"
    )
    return n


def check_uncond_branch(
    uncond: Any, scale_off: float | None, scale_uncond_only: float | None, seed: int = 0
) -> float | None:
    """Notebook 06, exercise. ``uncond(model, history, x_t, t, cond)``: the unconditional prediction ``(B, F, N, D)``
    that classifier-free guidance contrasts with ``model.denoise(x_t, t, model.prefill(history, cond), cond)``,
    as ``rollout`` computes it (history ``(B, C, F, N, D)``, cond an embedding ``(B, W)``); ``scale_off``: the
    scale s that turns guidance off; ``scale_uncond_only``: the s that samples from the unconditional model alone.
    Checked against ``rollout`` on a model with open gates; returns |conditional - unconditional|."""
    if _pending(uncond, scale_off, scale_uncond_only):
        return None
    from .config import ModelConfig
    from .model import VideoGPT
    from .rollout import rollout

    N, D, W, B = 4, 6, 32, 3
    model = open_gates(VideoGPT(ModelConfig(width=W, depth=2, heads=4), in_dim=D, grid=(1, N)), seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    history, cond = torch.randn(B, 2, 2, N, D, generator=g), torch.randn(B, W, generator=g)
    noise = torch.randn(B, 2, N, D, generator=torch.Generator().manual_seed(1))  # rollout's first draw
    t0 = torch.zeros(B)
    with torch.no_grad():
        mine = uncond(model, history, noise, t0, cond)
        pred_c = model.denoise(noise, t0, model.prefill(history, cond), cond)
        keeps_history = model.denoise(noise, t0, model.prefill(history), None)
        keeps_cond = model.denoise(noise, t0, None, cond)

        def library(s: float) -> torch.Tensor:  # one Euler step from t = 0 lands on the guided prediction
            g1 = torch.Generator().manual_seed(1)
            return rollout(model, history, 1, steps=1, cfg_scale=s, cond=cond, generator=g1)[:, -1]

        lib_u = library(0.0)
    _require(torch.is_tensor(mine) and mine.shape == noise.shape, f"uncond returns a tensor {tuple(noise.shape)}")
    gap = (pred_c - lib_u).abs().max().item()
    _require(
        gap > 1e-2 and min((keeps_history - lib_u).abs().max(), (keeps_cond - lib_u).abs().max()) > 1e-3,
        "internal check failed: the branches of this model should differ",
    )
    if not torch.allclose(mine, lib_u, atol=1e-5):
        if torch.allclose(mine, keeps_history, atol=1e-5):
            hint = "your branch still reads the history: the authors' unconditional branch drops it as well"
        elif torch.allclose(mine, keeps_cond, atol=1e-5):
            hint = "your branch still has the condition: drop it (drop= all True, or cond=None)"
        else:
            hint = "hint: the unconditional prediction is model.denoise with no cache and no condition"
        raise ExerciseError(f"max |your branch - rollout's| = {(mine - lib_u).abs().max():.2e}: {hint}")
    guided = mine + 2.0 * (pred_c - mine)
    _require(torch.allclose(guided, library(2.0), atol=1e-5), "internal check failed: guidance formula")
    _require(scale_off == 1.0, "with which s is x_u + s (x_c - x_u) the conditional prediction x_c itself?")
    _require(scale_uncond_only == 0.0, "with which s is x_u + s (x_c - x_u) the unconditional prediction x_u?")
    print(
        f"right: the unconditional branch drops both the history and the condition (here |x_c - x_u| up to "
        f"{gap:.2f}); s = 1 is no guidance, s = 0 the unconditional model, s > 1 pushes away from it"
    )
    return gap


def check_chance_levels(chance_levels: Any) -> None:
    """Notebook 07, exercise 1. ``chance_levels(labels, num_classes) -> (guess, majority)``: the expected accuracy
    of a uniformly random guess among ``num_classes``, and the accuracy of always answering the most frequent
    class of ``labels (M,)``."""
    if _pending(chance_levels):
        return None
    cases = (([0, 0, 0, 1, 2, 5], 6), (list(range(6)) * 4, 6), ([1, 1, 3, 3, 3, 0, 2, 2], 4), ([2] * 5 + [0], 3))
    for y, c in cases:
        labels = torch.tensor(y)
        want = (1 / c, torch.bincount(labels, minlength=c).max().item() / len(y))
        got = chance_levels(labels, c)
        _require(
            len(got) == 2 and all(abs(float(a) - b) < 1e-6 for a, b in zip(got, want)),
            f"chance_levels({y}, {c}) = {tuple(got)}: hint: a random guess is right 1 time in num_classes whatever "
            f"the labels; a constant answer is right as often as its class occurs",
        )
    print(
        "right: a classifier that ignores the video can reach the majority share, never less than 1/num_classes; "
        "the notebook's tables use the majority share, the stronger of the two"
    )


def check_block_sweep(
    sweep: dict[int, float] | None,
    best_block: int | None,
    depth: int,
    reference_block: int,
    reference_acc: float,
    atol: float = 0.02,
) -> None:
    """Notebook 07, exercise 2. ``sweep``: block -> linear-probe test accuracy of the mean-pooled features of that
    block (first seed, the notebook's probe settings); ``best_block``: the block that reads best;
    ``reference_acc``: the notebook's figure for ``reference_block``."""
    if _pending(sweep, best_block):
        return None
    _require(
        isinstance(sweep, dict) and sorted(sweep) == list(range(depth)),
        f"probe every block: sweep needs the keys 0 .. {depth - 1}",
    )
    _require(
        abs(sweep[reference_block] - reference_acc) <= atol,
        f"your block {reference_block} scores {sweep[reference_block]:.3f} but the notebook's probe "
        f"{reference_acc:.3f}: use the first seed's videos, pool 'mean', probe_steps and seed as in section 3",
    )
    best = max(sweep, key=sweep.get)
    _require(best_block == best, f"the highest accuracy in your sweep is at block {best}")
    print(
        f"right: block {best} reads best here ({sweep[best]:.3f}; last block {sweep[depth - 1]:.3f}): which "
        f"layer to read is a choice, and the paper reads intermediate layers too"
    )
