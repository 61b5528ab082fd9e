"""Machine choices: device, thread count and number format, each chosen by rule or by measurement."""

import pytest
import torch

from minivgpt import hardware


def test_set_threads_explicit_and_measured(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert hardware.set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(hardware, "measured_threads", lambda: 1)
        assert hardware.set_threads(0) == 1
        with pytest.raises(ValueError, match="threads=-1 is out of range"):
            hardware.set_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_measured_threads_is_one_of_the_candidates_and_restores_the_count():
    before = torch.get_num_threads()
    n = hardware.measured_threads.__wrapped__(repeats=1)
    assert n in (1, before) and torch.get_num_threads() == before


def test_resolve_device():
    assert hardware.resolve_device("cpu") == torch.device("cpu")
    assert hardware.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable CUDA GPU: use device=cpu or auto"):
            hardware.resolve_device("cuda")


def test_resolve_amp_rules(monkeypatch):
    cpu = torch.device("cpu")
    assert hardware.resolve_amp("off", cpu) is False
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda *a, **k: 0.5)
    assert hardware.resolve_amp("auto", cpu) is False
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda *a, **k: 1.05)
    assert hardware.resolve_amp("auto", cpu) is False  # a tie keeps fp32
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda *a, **k: 1.5)
    assert hardware.resolve_amp("auto", cpu) is True
    with pytest.raises(ValueError, match="amp='fp8'"):
        hardware.resolve_amp("fp8", cpu)
