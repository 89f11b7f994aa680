"""Public entry points: exact, memory-bounded decode and encode with a MONAI `AutoencoderKlMaisi`.

Both take the network exactly as loaded from official weights (whatever `num_splits` it was built
with: only its parameters are used), plan automatically when no plan is given, and return a tensor on
the caller's device (the latent's / image's device).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from MAISIEngine.errors import MaisiError
from MAISIEngine.tsp.executor import Executor
from MAISIEngine.tsp.graph import (
    Graph,
    architecture_model,
    decoder_graph,
    encoder_graph,
    fuse_shortcuts,
)
from MAISIEngine.tsp.planner import Plan, make_plan, resolve_devices, resolve_dtype

Progress = Callable[[int, int], None]


def _model_device(autoencoder: nn.Module) -> torch.device:
    param = next(autoencoder.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _as_model(architecture: Any) -> nn.Module:
    """An autoencoder module from a module, a Preset, or the MONAI kwargs dict of a preset."""
    if isinstance(architecture, nn.Module):
        return architecture
    kwargs = getattr(architecture, "autoencoder", architecture)
    if not isinstance(kwargs, dict):
        raise MaisiError("cannot read the VAE architecture", "pass an AutoencoderKlMaisi, a Preset or its autoencoder kwargs")
    return architecture_model(kwargs)


def _downsample_factor(autoencoder: nn.Module) -> int:
    return 2 ** sum(type(b).__name__ == "MaisiDownsample" for b in autoencoder.encoder.blocks)


def _check_tensor(x: Any, what: str, channels: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MaisiError(f"the {what} must be a 5-D tensor (batch, channels, x, y, z); got {shape}", "add the batch and channel axes")
    if x.shape[1] != channels:
        raise MaisiError(f"the {what} has {x.shape[1]} channels; this VAE takes {channels}", "check the model preset")
    if min(x.shape[2:]) < 1 or x.shape[0] < 1:
        raise MaisiError(f"the {what} is empty: shape {tuple(x.shape)}", "give at least one voxel per axis")
    if not x.is_floating_point():
        raise MaisiError(f"the {what} must hold floating-point values, not {x.dtype}", "convert it with .float()")
    if not bool(torch.isfinite(x).all()):
        raise MaisiError(f"the {what} contains NaN or infinite values", "check the step that produced it")
    return x


def plan_decode(latent_shape: Sequence[int], architecture: Any, devices: Any = "cpu", max_memory_bytes: int | None = None,
                dtype: Any = None, axis: int | None = None, allow_offload: bool = True) -> Plan:
    """Plan decoding one latent of shape (channels, x, y, z) or (x, y, z) with this VAE architecture.

    `architecture` is an `AutoencoderKlMaisi`, a `Preset`, or a preset's autoencoder kwargs.
    `max_memory_bytes` bounds what decoding may hold on each device (default: CPU half the available
    memory, CUDA 90% of the free memory); `axis` forces the split axis; `allow_offload=False` keeps
    every tensor on the device.
    """
    model = _as_model(architecture)
    graph = decoder_graph(model)
    shape = _full_shape(latent_shape, graph.nodes[0].channels, "latent")
    return make_plan("decode", graph, shape, devices, max_memory_bytes, dtype, axis=axis, allow_offload=allow_offload)


def plan_encode(image_shape: Sequence[int], architecture: Any, devices: Any = "cpu", max_memory_bytes: int | None = None,
                dtype: Any = None, axis: int | None = None, allow_offload: bool = True) -> Plan:
    """Plan encoding one image of shape (channels, x, y, z) or (x, y, z); see `plan_decode`."""
    model = _as_model(architecture)
    graph = encoder_graph(model)
    shape = _full_shape(image_shape, graph.nodes[0].channels, "image")
    _check_divisible(shape[1:], _downsample_factor(model))
    return make_plan("encode", graph, shape, devices, max_memory_bytes, dtype, axis=axis, allow_offload=allow_offload)


def _full_shape(shape: Sequence[int], channels: int, what: str) -> tuple[int, int, int, int]:
    values = tuple(int(s) for s in shape)
    if len(values) == 3:
        values = (channels, *values)
    if len(values) != 4 or min(values) < 1:
        raise MaisiError(f"the {what} size {tuple(shape)} is not a 3-D size", "give three positive sizes (x, y, z)")
    return values  # type: ignore[return-value]


def _check_divisible(spatial: Sequence[int], factor: int) -> None:
    if any(int(s) % factor for s in spatial):
        raise MaisiError(
            f"image size {'x'.join(str(int(s)) for s in spatial)} is not divisible by {factor} on every axis",
            f"pad or resample the image to a multiple of {factor} per axis",
        )


def _resolve(plan: Plan | None, devices: Any, dtype: Any, default: torch.device) -> tuple[list[torch.device], torch.dtype]:
    """Devices and compute dtype: explicit arguments first, then the plan's, then the model's device."""
    if devices is None:
        devices = list(plan.devices) if plan is not None else [default]
    devs = resolve_devices(devices)
    return devs, resolve_dtype(dtype if dtype is not None else (plan.dtype if plan is not None else None), devs)


def _run(graph: Graph, plan: Plan | None, kind: str, x: torch.Tensor, devs: list[torch.device], compute: torch.dtype,
         max_memory_bytes: int | None, out_device: torch.device, out_dtype: torch.dtype,
         progress: Progress | None) -> torch.Tensor:
    """Plan if needed, then run the graph on every batch item into one preallocated output."""
    item_shape = tuple(int(s) for s in x.shape[1:])
    if plan is None:
        plan = make_plan(kind, graph, item_shape, devs, max_memory_bytes, compute,  # type: ignore[arg-type]
                         output_on_device=out_device in devs, output_itemsize=out_dtype.itemsize)
    try:
        graph = fuse_shortcuts(graph, plan.fused)
        fits = plan.node_names == tuple(n.name for n in graph.nodes)
    except ValueError:  # the plan fuses a shortcut this VAE does not have
        fits = False
    if not fits or plan.kind != kind or plan.input_shape != item_shape:
        raise MaisiError(
            f"the plan was made for {plan.kind} of {plan.input_shape}, not {kind} of {item_shape} with this VAE",
            "make a new plan for this input, or pass plan=None",
        )
    executor = Executor(graph, list(plan.passes), devs, compute, plan.axis)
    out = torch.empty((x.shape[0], *plan.output_shape), dtype=out_dtype, device=out_device)
    for b in range(x.shape[0]):
        executor.run(x[b : b + 1], out[b : b + 1], progress)
    return out


def _conv1x1(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One of the VAE's 1x1 quant convolutions, applied whole (its tensors are latent-sized)."""
    inner = conv.conv
    bias = None if inner.bias is None else inner.bias.to(x.device, x.dtype)
    return F.conv3d(x, inner.weight.to(x.device, x.dtype), bias)


def decode(autoencoder: nn.Module, latent: torch.Tensor, plan: Plan | None = None, devices: Any = None,
           max_memory_bytes: int | None = None, dtype: Any = None, progress: Progress | None = None) -> torch.Tensor:
    """Decode a latent (already divided by the scale factor) to the VAE's output space, exactly.

    Equals `autoencoder.decode_stage_2_outputs(latent)` of the unsplit network up to floating-point
    rounding, with memory bounded by the plan. The result is on the latent's device, in its dtype.
    """
    graph = decoder_graph(autoencoder)
    latent = _check_tensor(latent, "latent", int(autoencoder.post_quant_conv.conv.in_channels))
    devs, compute = _resolve(plan, devices, dtype, _model_device(autoencoder))
    with torch.inference_mode():
        z = _conv1x1(autoencoder.post_quant_conv, latent.to(devs[0], compute))
        return _run(graph, plan, "decode", z, devs, compute, max_memory_bytes, latent.device, latent.dtype, progress)


def encode(autoencoder: nn.Module, image: torch.Tensor, plan: Plan | None = None, devices: Any = None,
           max_memory_bytes: int | None = None, dtype: Any = None, progress: Progress | None = None,
           return_sigma: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Encode an image in [0, 1] to the posterior mean z_mu (deterministic), exactly and memory-bounded.

    With `return_sigma=True` returns (z_mu, z_sigma); a sample is then `autoencoder.sampling(z_mu,
    z_sigma)`. The result is on the image's device, in its dtype.
    """
    graph = encoder_graph(autoencoder)
    image = _check_tensor(image, "image", int(graph.nodes[0].channels))
    _check_divisible(image.shape[2:], _downsample_factor(autoencoder))
    devs, compute = _resolve(plan, devices, dtype, _model_device(autoencoder))
    with torch.inference_mode():
        h = _run(graph, plan, "encode", image, devs, compute, max_memory_bytes, image.device, image.dtype, progress)
        z_mu = _conv1x1(autoencoder.quant_conv_mu, h)
        if not return_sigma:
            return z_mu
        log_var = _conv1x1(autoencoder.quant_conv_log_sigma, h)
        return z_mu, torch.exp(torch.clamp(log_var, -30.0, 20.0) / 2)
