"""The two CPU inference speed-ups change no result: the ControlNet's condition embedding computed once per
volume (bit-identical steps) and 3D convolutions sent to oneDNN (within float32 rounding)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.profiler import profile

from MAISIEngine import sampling
from MAISIEngine.condition_cache import (
    CachedConditionEmbedding,
    embedding_computed_once,
)
from MAISIEngine.masks import label_bitplanes
from MAISIEngine.models import load_model
from MAISIEngine.onednn_conv import OneDNNConv3d, use_onednn_convolutions


@pytest.fixture
def model_with_live_controlnet(tiny_model_dir):
    """The tiny model with the zero-initialised convolutions of its U-Net and ControlNet filled in, so the
    mask condition reaches the output and a wrong embedding would show in the result."""
    model = load_model(str(tiny_model_dir), "cpu")
    generator = torch.Generator().manual_seed(3)
    for network in (model.unet, model.controlnet):
        for parameter in network.parameters():
            if parameter.dim() > 1 and not parameter.any():
                with torch.no_grad():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


def sample_once(model, condition: torch.Tensor, steps: int = 4) -> torch.Tensor:
    cond = sampling.Conditions(spacing=torch.tensor([[4.0, 4.0, 4.0]]) * 100,
                               class_labels=torch.tensor([1]), controlnet_cond=condition)
    noise = torch.randn((1, 4, 8, 8, 8), generator=torch.Generator().manual_seed(0))
    return sampling.sample(model.unet, model.controlnet, sampling.make_scheduler(model.preset), noise, cond, steps,
                           precision="fp32")


def labels_condition(value: int) -> torch.Tensor:
    labels = torch.zeros((1, 1, 32, 32, 32), dtype=torch.int64)
    labels[..., 8:24, 8:24, 8:24] = value
    return label_bitplanes(labels).float()


def test_condition_embedding_runs_once_per_volume_and_changes_nothing(model_with_live_controlnet, monkeypatch):
    model = model_with_live_controlnet
    embedding = model.controlnet.controlnet_cond_embedding
    calls = []
    embedding.register_forward_hook(lambda *args: calls.append(1))
    condition = labels_condition(1)

    cached = sample_once(model, condition, steps=4)
    assert len(calls) == 1
    assert model.controlnet.controlnet_cond_embedding is embedding

    calls.clear()
    monkeypatch.setattr(sampling, "embedding_computed_once", lambda controlnet, *conds: contextlib.nullcontext())
    uncached = sample_once(model, condition, steps=4)
    assert len(calls) == 4
    assert torch.equal(cached, uncached)
    other_mask = sample_once(model, labels_condition(3), steps=4)
    assert (other_mask - uncached).abs().max() > 1e-3  # the mask matters, so the equality above means something


def test_cached_embedding_recomputes_for_another_condition_and_is_removed_after_an_error(model_with_live_controlnet):
    controlnet = model_with_live_controlnet.controlnet
    original = controlnet.controlnet_cond_embedding
    first, second = labels_condition(1), labels_condition(3)
    with pytest.raises(RuntimeError, match="stopped"), embedding_computed_once(controlnet, first):
        stand_in = controlnet.controlnet_cond_embedding
        assert isinstance(stand_in, CachedConditionEmbedding)
        with torch.no_grad():
            assert stand_in(first) is stand_in.stored[0][1]
            assert torch.equal(stand_in(second), original(second))
            assert not torch.equal(stand_in(second), stand_in.stored[0][1])
        raise RuntimeError("stopped")
    assert controlnet.controlnet_cond_embedding is original


def kernels(run) -> set[str]:
    with profile() as prof:
        run()
    return {event.name for event in prof.events()}


def small_network() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv3d(16, 16, 3, padding=1), torch.nn.SiLU(),
                               torch.nn.Conv3d(16, 8, 3, stride=2, padding=1))


def test_small_3d_convolutions_run_on_onednn_with_the_same_result():
    torch.manual_seed(0)
    plain = small_network()
    fast = use_onednn_convolutions(small_network())
    fast.load_state_dict(plain.state_dict())
    assert [type(m) for m in fast] == [OneDNNConv3d, torch.nn.SiLU, OneDNNConv3d]
    assert set(fast.state_dict()) == set(plain.state_dict())
    x = torch.randn(1, 16, 12, 12, 12)  # 1 x 16 x 12 x 12 = 2304: under PyTorch's 20480 rule, so it picks slow_conv3d

    with torch.no_grad():
        assert "aten::slow_conv3d_forward" in kernels(lambda: plain(x))
        used = kernels(lambda: fast(x))
        expected, got = plain(x), fast(x)
    assert "aten::mkldnn_convolution" in used and "aten::slow_conv3d_forward" not in used
    assert got.shape == (1, 8, 6, 6, 6)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_training_keeps_pytorchs_own_convolution_and_its_gradients():
    torch.manual_seed(0)
    conv = use_onednn_convolutions(torch.nn.Conv3d(4, 4, 3, padding=1))
    x = torch.randn(1, 4, 8, 8, 8, requires_grad=True)
    used = kernels(lambda: conv(x).square().sum().backward())
    assert "aten::mkldnn_convolution" not in used
    reference = torch.nn.Conv3d(4, 4, 3, padding=1)
    reference.load_state_dict(conv.state_dict())
    x_ref = x.detach().clone().requires_grad_(True)
    reference(x_ref).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, reference.weight.grad)
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_loaded_networks_use_onednn_convolutions(tiny_model_dir):
    model = load_model(str(tiny_model_dir), "cpu")
    for network in (model.autoencoder, model.unet, model.controlnet):
        convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
        assert convs and all(type(m) is OneDNNConv3d for m in convs)
