import json

from minivgpt import bench


def test_bench_writes_the_documented_keys(tmp_path):
    out = tmp_path / "b.json"
    bench.main(["--quick", "--json", str(out)])
    res = json.loads(out.read_text())
    assert set(res["train"]) >= {"tokens_per_s", "useful_flops_per_s", "matmul_peak_flops_per_s", "mfu"}
    assert set(res["attention"]) >= {"seq_len", "dense_ms", "mask_aware_ms", "flex_ms", "speedup"}
    assert set(res["rollout"]) >= {"history_clips", "cache_s", "recompute_s", "speedup", "max_abs_diff"}
    assert res["rollout"]["max_abs_diff"] <= 1e-5  # cache and recompute give the same frames
    assert 0 < res["train"]["mfu"] and isinstance(res["device"], str)


def test_useful_flops_count_only_allowed_attention_pairs():
    from minivgpt.config import ModelConfig
    from minivgpt.model import VideoGPT

    m = VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=12, grid=(2, 2))
    dense_like = bench.train_flops(m, 4, 2, 4, batch=1)
    linear = sum(p.numel() for n, p in m.named_parameters() if n.endswith("weight") and p.ndim == 2
                 and "ada" not in n and "t_mlp" not in n and "emb" not in n)
    L = 2 * 4 * 2 * 4 - 8
    attn = dense_like / 3 - 2 * linear * L
    from minivgpt.attention import attention_flops

    assert attn == attention_flops(4, 2, 4, 16, 2, True)["useful_flops"]
    assert attn < attention_flops(4, 2, 4, 16, 2, True)["dense_flops"]
