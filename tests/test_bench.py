"""The bench: its parameters, its FLOP counts (checked against torch's own counter) and its output.

Correctness only: no assertion here depends on how fast this machine is.
"""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minivgpt import bench, masks
from minivgpt.config import ModelConfig
from minivgpt.model import VideoGPT


def test_bench_writes_the_documented_keys_and_mfu_is_a_fraction(tmp_path):
    out = tmp_path / "b.json"
    bench.main(["quick=true", "repeats=5", f"json={out}"])
    res = json.loads(out.read_text())
    tr = res["train"]
    assert set(tr) >= {"tokens_per_s", "useful_flops_per_s", "matmul_peak_flops_per_s", "mfu", "step_s"}
    assert set(res["attention"]) >= {"seq_len", "dense_ms", "mask_aware_ms", "flex_ms", "speedup"}
    assert set(res["attention"]["contended"]) >= {"dense_ms", "mask_aware_ms", "speedup"}
    assert set(res["rollout"]) >= {"history_clips", "cache_s", "recompute_s", "speedup", "max_abs_diff"}
    assert res["rollout"]["max_abs_diff"] <= 1e-5  # cache and recompute give the same frames
    assert 0 < tr["mfu"] <= 1
    assert tr["mfu"] == pytest.approx(tr["useful_flops_per_s"] / tr["matmul_peak_flops_per_s"])
    for s in (tr["step_s_spread"], tr["matmul_peak_spread"]):  # five interleaved rounds, summarised
        assert s["n"] == 5 and s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"]
    assert tr["step_s"] == tr["step_s_spread"]["median"]
    assert res["config"]["width"] == bench.QUICK["width"] and isinstance(res["cpu_capability"], str)


def test_loader_row_compares_shards_decoding_and_training(tmp_path):
    res = bench.run_all(device="cpu", quick=True, contended=False, repeats=2)
    row = res["loader"]
    for key in ("shards_samples_per_s", "decode_samples_per_s", "train_samples_per_s", "prepare_s"):
        assert row[key] > 0, key
    assert row["shards_over_train"] == pytest.approx(row["shards_samples_per_s"] / row["train_samples_per_s"])
    assert row["train_samples_per_s"] == pytest.approx(res["train"]["batch"] / res["train"]["step_s"])
    assert row["spread_s"]["shards"]["n"] == 2 and row["clips"] >= 1 and row["image_size"] == 16
    assert "loader" not in bench.run_all(device="cpu", quick=True, contended=False, loader=False)


def test_parameters_are_key_value_and_unknown_names_are_rejected():
    cfg = bench.bench_config({"quick": "true", "width": "32", "repeats": "2"})
    assert (cfg.width, cfg.repeats, cfg.depth) == (32, 2, bench.QUICK["depth"])  # explicit keys beat quick
    with pytest.raises(ValueError, match="did you mean 'repeats'"):
        bench.main(["repaets=3"])
    with pytest.raises(ValueError, match="heads"):
        bench.bench_config({"width": "30", "heads": "4"})
    with pytest.raises(ValueError, match="key=value"):
        bench.main(["--quick"])


def test_size_large_is_the_gpu_preset_and_explicit_keys_win():
    cfg = bench.bench_config({"size": "large", "repeats": "2"})
    assert (cfg.width, cfg.depth, cfg.heads, cfg.compile, cfg.repeats) == (768, 12, 12, True, 2)
    L = 2 * cfg.clips * cfg.frames_per_clip * cfg.tokens_per_frame
    assert L == 4096 and bench.attention_clips(cfg) == [8, 16]  # attention rows at L = 4,096 and 8,192
    with pytest.raises(ValueError, match="size='huge'"):
        bench.bench_config({"size": "huge"})
    with pytest.raises(ValueError, match="attention_clips='8,x'"):
        bench.bench_config({"attention_clips": "8,x"})


def test_attention_sweep_rows_have_their_own_lengths():
    res = bench.run_all(device="cpu", quick=True, contended=False, loader=False, attention_clips="1,3")
    assert [row["seq_len"] for row in res["attention_sweep"]] == [2 * k * 2 * 16 for k in (1, 3)]
    assert all(row["dtype"] == "float32" and row["dense_ms"] > 0 for row in res["attention_sweep"])


def _counted_linear_flops(model, K, F, N, batch):
    """Forward FLOPs of the per-token linear layers, as torch's FlopCounterMode counts them."""
    x = torch.randn(batch, K, F, N, model.in_dim)
    with FlopCounterMode(display=False) as counter:
        model(x, x, torch.rand(batch, K), drop_last_clean=True)
    counts = counter.get_flop_counts()
    conditioning = ("t_mlp", "ada")  # one row per segment, not per token: not part of the useful work
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and not any(c in name for c in conditioning):
            total += sum(counts[f"VideoGPT.{name}"].values())
    return total


@pytest.mark.parametrize("K,F,N,batch", [(3, 2, 4, 2), (2, 1, 9, 1)])
def test_train_flops_match_torch_flop_counter(K, F, N, batch):
    side = int(N**0.5)
    m = VideoGPT(ModelConfig(width=32, depth=2, heads=2, attention="dense"), in_dim=12, grid=(side, N // side))
    L = 2 * K * F * N - F * N
    allowed = int(masks.hierarchical_mask(K, F, N)[:L, :L].sum())
    attn = 2 * 2 * allowed * (32 // 2) * 2  # QK^T and PV, 2 FLOPs per multiply-add, head_dim 16, 2 heads
    linear = _counted_linear_flops(m, K, F, N, batch)
    assert bench.train_flops(m, K, F, N, batch) == 3 * (linear + batch * 2 * attn)
    dense_attn = 2 * 2 * L * L * 16 * 2
    assert bench.train_flops(m, K, F, N, batch) < 3 * (linear + batch * 2 * dense_attn)


def test_matmul_workload_uses_the_model_shapes():
    m = VideoGPT(ModelConfig(width=32, depth=2, heads=2), in_dim=12, grid=(2, 2))
    shapes = bench.linear_shapes(m, 3, 2, 4, batch=2)
    fn, flops = bench.matmul_workload(shapes, torch.device("cpu"), torch.float32)
    fn()
    attn = 3 * 2 * 2 * bench.attention_flops(3, 2, 4, 16, 2, True)["useful_flops"]  # fwd + bwd, batch 2, depth 2
    assert flops == 3 * 2 * sum(t * i * o for t, i, o in shapes) == bench.train_flops(m, 3, 2, 4, 2) - attn
    assert (2 * (2 * 3 * 2 * 4 - 8), 32, 96) in shapes  # qkv over every token of both sequences
    assert (2 * 3 * 2 * 4, 32, 12) in shapes  # the output head over the noisy tokens only


def test_measure_interleaves_and_keeps_the_timed_rounds():
    calls = []
    times = bench.measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, torch.device("cpu"))
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds, each a then b
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    with pytest.raises(ValueError, match="repeats"):
        bench.measure({"a": lambda: None}, 0, torch.device("cpu"))


def _seq_len(K, F, N, drop):
    return 2 * K * F * N - (F * N if drop else 0)


@pytest.mark.parametrize("K,F,N,drop", [(1, 1, 1, False), (3, 2, 4, False), (4, 3, 2, True), (2, 1, 5, True)])
def test_attention_flops_count_allowed_and_computed_pairs(K, F, N, drop):
    L = _seq_len(K, F, N, drop)
    fl = bench.attention_flops(K, F, N, head_dim=16, heads=3, drop_last_clean=drop)
    mask = masks.hierarchical_mask(K, F, N)[:L, :L]
    assert fl["seq_len"] == L
    assert fl["allowed_pairs"] == int(mask.sum())
    assert fl["dense_pairs"] == L * L
    assert fl["useful_flops"] == 4 * int(mask.sum()) * 16 * 3
    assert fl["dense_flops"] == 4 * L * L * 16 * 3
    assert fl["density"] == pytest.approx(mask.float().mean().item())
    # the mask-aware path also computes the forbidden pairs inside every clean clip's own block
    S = F * N
    clean_blocks = [slice((2 * k + 1) * S, (2 * k + 2) * S) for k in range(K) if (2 * k + 2) * S <= L]
    forbidden_in_blocks = sum(int((~mask[b, b]).sum()) for b in clean_blocks)
    assert fl["mask_aware_pairs"] == int(mask.sum()) + forbidden_in_blocks
    assert fl["mask_aware_flops"] == 4 * fl["mask_aware_pairs"] * 16 * 3


def test_benchmark_attention_small():
    res = bench.benchmark_attention(num_clips=2, F=1, N=8, heads=2, head_dim=8, repeats=2)
    assert set(res) >= {"seq_len", "dense_ms", "mask_aware_ms", "flex_ms", "speedup", "computed_over_allowed"}
    assert res["seq_len"] == 32
    assert res["dense_ms"] > 0 and res["mask_aware_ms"] > 0 and res["speedup"] > 0
    assert res["computed_over_allowed"] == 1.0  # F = 1: no frame-causal block, nothing forbidden is computed
    assert res["spread_ms"]["dense"]["n"] == 2
    assert res["flex_ms"] is None or res["flex_ms"] > 0
