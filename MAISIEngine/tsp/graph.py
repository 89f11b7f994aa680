"""The MAISI VAE decoder / encoder as a flat list of convolutions and residual additions.

Tensor splitting needs to know, for every layer, which input rows an output row depends on and which
tensors a GroupNorm normalises. Walking MONAI's module tree (`MaisiConvolution`, `MaisiResBlock`,
`MaisiUpsample`, `MaisiDownsample`, `MaisiGroupNorm3D`) gives that list without touching the weights:
each node keeps a reference to the MONAI modules whose parameters it uses, so official checkpoints run
unchanged. In the MAISI VAE every GroupNorm (with or without SiLU) and every x2 interpolation feeds a
convolution, so they are folded into that convolution as its input step (`pre`): they are cheap to
recompute for the few rows a convolution needs and never need a buffer of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from monai.apps.generation.maisi.networks.autoencoderkl_maisi import (
    MaisiConvolution,
    MaisiDownsample,
    MaisiGroupNorm3D,
    MaisiResBlock,
    MaisiUpsample,
)
from torch import nn

from MAISIEngine.errors import MaisiError

INPUT, CONV, ADD = "input", "conv", "add"
NORM, UPSAMPLE = "norm", "upsample"  # input steps of a convolution (Node.pre)


@dataclass(frozen=True)
class Node:
    """One operation; `inputs` are indices of earlier nodes."""

    index: int
    op: str  # INPUT, CONV or ADD
    inputs: tuple[int, ...]
    channels: int
    name: str
    kernel: int = 1
    stride: int = 1
    pad: tuple[int, int] = (0, 0)  # zeros before / after, on every spatial axis
    pre: str | None = None  # NORM (GroupNorm, optionally SiLU) or UPSAMPLE (x2) before the conv
    upsample: str = "trilinear"  # UPSAMPLE only: "trilinear", or "zeros" (a transposed convolution, see below)
    silu: bool = False
    fused: bool = False  # a shortcut convolution fused with its source (`fuse_shortcuts`)


@dataclass
class Graph:
    """Nodes in execution order plus the MONAI module behind each conv / norm node."""

    nodes: list[Node] = field(default_factory=list)
    modules: dict[int, nn.Module] = field(default_factory=dict)  # conv node -> its Conv3d
    norms: dict[int, MaisiGroupNorm3D] = field(default_factory=dict)  # conv node with pre=NORM -> its GroupNorm

    @property
    def output(self) -> int:
        return self.nodes[-1].index

    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {n.index: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.index)
        return out

    def normalised(self) -> set[int]:
        """Tensors whose whole-volume GroupNorm statistics some convolution needs."""
        return {n.inputs[0] for n in self.nodes if n.pre == NORM}

    def sizes(self, spatial: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        """Spatial size of every node for a given input size."""
        out: list[tuple[int, int, int]] = []
        for n in self.nodes:
            if n.op == INPUT:
                out.append(tuple(spatial))  # type: ignore[arg-type]
                continue
            src = out[n.inputs[0]]
            if n.op == CONV:
                scale = 2 if n.pre == UPSAMPLE else 1
                out.append(tuple((scale * s + n.pad[0] + n.pad[1] - n.kernel) // n.stride + 1 for s in src))  # type: ignore[misc]
            else:
                out.append(src)
        return out


class _Builder:
    """Appends nodes while walking MONAI blocks; a GroupNorm or interpolation waits for its conv."""

    def __init__(self) -> None:
        self.graph = Graph()
        self.pending: tuple[str, MaisiGroupNorm3D | None, bool] | None = None

    def _add(self, op: str, inputs: tuple[int, ...], channels: int, name: str, **kw) -> int:
        index = len(self.graph.nodes)
        self.graph.nodes.append(Node(index, op, inputs, channels, name, **kw))
        return index

    def input(self, channels: int) -> int:
        return self._add(INPUT, (), channels, "input")

    def conv(self, x: int, module: nn.Module, name: str, pad: tuple[int, int] | None = None,
             upsample: str = "trilinear") -> int:
        conv = module if isinstance(module, nn.Conv3d) else _conv3d_of(module, name)
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        if len(set(k)) != 1 or len(set(s)) != 1 or not isinstance(p, tuple) or len(set(p)) != 1 or conv.groups != 1:
            raise MaisiError(f"{name} is not a cubic convolution", "tensor splitting supports MAISI VAEs only")
        if tuple(conv.dilation) != (1, 1, 1):
            raise MaisiError(f"{name} uses dilation", "tensor splitting supports MAISI VAEs only")
        pre, norm, silu = self.pending if self.pending is not None else (None, None, False)
        self.pending = None
        index = self._add(CONV, (x,), conv.out_channels, name, kernel=k[0], stride=s[0],
                          pad=pad if pad is not None else (p[0], p[0]), pre=pre, silu=silu,
                          upsample=upsample if pre == UPSAMPLE else "trilinear")
        self.graph.modules[index] = conv
        if norm is not None:
            self.graph.norms[index] = norm
        return index

    def norm(self, module: MaisiGroupNorm3D, name: str, silu: bool) -> None:
        if self.pending is not None:
            raise MaisiError(f"{name} follows another normalisation", "tensor splitting supports MAISI VAEs only")
        self.pending = (NORM, module, silu)

    def block(self, x: int, block: nn.Module, name: str) -> int:
        if self.pending is not None and not isinstance(block, MaisiConvolution):
            raise MaisiError(f"the normalisation before {name} does not feed a convolution", "tensor splitting supports MAISI VAEs only")
        if isinstance(block, MaisiConvolution):
            return self.conv(x, block, name)
        if isinstance(block, MaisiGroupNorm3D):
            self.norm(block, name, silu=False)
            return x
        if isinstance(block, MaisiResBlock):
            self.norm(block.norm1, f"{name}.norm1", silu=True)
            h = self.conv(x, block.conv1, f"{name}.conv1")
            self.norm(block.norm2, f"{name}.norm2", silu=True)
            h = self.conv(h, block.conv2, f"{name}.conv2")
            skip = x if isinstance(block.nin_shortcut, nn.Identity) else self.conv(x, block.nin_shortcut, f"{name}.nin_shortcut")
            return self._add(ADD, (h, skip), self.graph.nodes[h].channels, f"{name}.add")
        if isinstance(block, MaisiUpsample):
            self.pending = (UPSAMPLE, None, False)
            if block.use_convtranspose:
                return self.conv(x, transposed_as_conv(block.conv, f"{name}.conv"), f"{name}.conv", upsample="zeros")
            return self.conv(x, block.conv, f"{name}.conv")
        if isinstance(block, MaisiDownsample):
            if tuple(block.pad) != (0, 1, 0, 1, 0, 1):
                raise MaisiError(f"{name} pads unusually", "tensor splitting supports MAISI VAEs only")
            return self.conv(x, block.conv, f"{name}.conv", pad=(0, 1))
        raise MaisiError(
            f"{name} is a {type(block).__name__}, which tensor splitting cannot run",
            "use a MAISI VAE without attention blocks (attention_levels all false, no non-local attention)",
        )

    def finish(self) -> Graph:
        if self.pending is not None:
            raise MaisiError("the network ends with a normalisation", "tensor splitting supports MAISI VAEs only")
        return self.graph


def _conv3d_of(module: nn.Module, name: str) -> nn.Conv3d:
    """The plain Conv3d inside MONAI's MaisiConvolution / Convolution wrappers."""
    inner = module
    for _ in range(3):
        if isinstance(inner, nn.Conv3d):
            return inner
        inner = getattr(inner, "conv", None)  # type: ignore[assignment]
        if inner is None:
            break
    raise MaisiError(f"{name} holds no 3D convolution", "tensor splitting supports 3D MAISI VAEs only")


def transposed_as_conv(module: nn.Module, name: str) -> nn.Conv3d:
    """The stride-2 transposed convolution of an upsampling block as an ordinary convolution.

    ConvTranspose3d(kernel 3, stride 2, padding 1, output_padding 1) of x equals a stride-1 convolution
    with padding 1 of x spread onto the doubled grid (x at even positions, zeros between and after),
    with the kernel flipped and its in/out channels swapped. As a convolution preceded by an x2 input
    step it splits into slabs exactly like the trilinear upsampling blocks (MAISI's mask VAE uses it).
    """
    inner = module
    for _ in range(3):
        if isinstance(inner, nn.ConvTranspose3d):
            break
        inner = getattr(inner, "conv", None)  # type: ignore[assignment]
    if not isinstance(inner, nn.ConvTranspose3d):
        raise MaisiError(f"{name} holds no transposed 3D convolution", "tensor splitting supports MAISI VAEs only")
    k, s, p, op = inner.kernel_size, inner.stride, inner.padding, inner.output_padding
    if set(k) != {3} or set(s) != {2} or set(p) != {1} or set(op) != {1} or inner.groups != 1 or set(inner.dilation) != {1}:
        raise MaisiError(f"{name} is not a kernel-3 stride-2 transposed convolution", "tensor splitting supports MAISI VAEs only")
    weight = inner.weight.detach()
    conv = nn.Conv3d(inner.out_channels, inner.in_channels, 3, padding=1, bias=inner.bias is not None,
                     device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.flip(2, 3, 4).transpose(0, 1))
        if inner.bias is not None:
            conv.bias.copy_(inner.bias.detach())
    return conv.requires_grad_(False)


def decoder_graph(autoencoder: nn.Module) -> Graph:
    """The decoder from its first convolution to the image (post_quant_conv is applied beforehand)."""
    blocks = autoencoder.decoder.blocks
    builder = _Builder()
    x = builder.input(_conv3d_of(blocks[0], "decoder.blocks.0").in_channels)
    for i, block in enumerate(blocks):
        x = builder.block(x, block, f"decoder.blocks.{i}")
    return builder.finish()


def encoder_graph(autoencoder: nn.Module) -> Graph:
    """The encoder from the image to its last convolution (the 1x1 quant convs are applied afterwards)."""
    blocks = autoencoder.encoder.blocks
    builder = _Builder()
    x = builder.input(_conv3d_of(blocks[0], "encoder.blocks.0").in_channels)
    for i, block in enumerate(blocks):
        x = builder.block(x, block, f"encoder.blocks.{i}")
    return builder.finish()


def architecture_model(architecture: dict) -> nn.Module:
    """An `AutoencoderKlMaisi` with the given MONAI kwargs on the meta device (no memory, no weights)."""
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import (
        AutoencoderKlMaisi,
    )

    kwargs = dict(architecture)
    kwargs["num_splits"] = 1
    with torch.device("meta"):
        return AutoencoderKlMaisi(**kwargs)


def fusable_shortcuts(graph: Graph) -> list[int]:
    """1x1 shortcut convolutions whose input is itself a convolution's output.

    Both are linear, so nin(conv(pre(s))) is one convolution of pre(s) with weights W_nin @ W_conv and
    bias W_nin b_conv + b_nin. A plan that cannot keep the (large) input of a shortcut then evaluates
    this fused convolution from the (small) tensor before it, instead of recomputing the large one.
    """
    out = []
    for node in graph.nodes:
        if node.op == CONV and node.kernel == 1 and node.pre is None and node.stride == 1 and node.pad == (0, 0):
            source = graph.nodes[node.inputs[0]]
            if source.op == CONV and source.pre != NORM:  # a normalised input would need its own statistics
                out.append(node.index)
    return out


def fuse_shortcuts(graph: Graph, which: tuple[int, ...], weights: bool = True) -> Graph:
    """A copy of the graph with the given shortcut convolutions fused into their source convolution.

    Without `weights` the fused convolutions are shapes only (meta tensors), enough for planning.
    """
    if not which:
        return graph
    fused = Graph(list(graph.nodes), dict(graph.modules), dict(graph.norms))
    fusable = set(fusable_shortcuts(graph))
    for index in which:
        node = graph.nodes[index]
        source = graph.nodes[node.inputs[0]]
        if index not in fusable:
            raise ValueError(f"{node.name} cannot be fused")
        fused.nodes[index] = Node(index, CONV, source.inputs, node.channels, f"{node.name}+{source.name}",
                                  kernel=source.kernel, stride=source.stride, pad=source.pad, pre=source.pre, upsample=source.upsample,
                                  silu=source.silu, fused=True)
        fused.modules[index] = _fused_conv(graph.modules[index], graph.modules[source.index], weights)
    return fused


def _fused_conv(outer: nn.Conv3d, inner: nn.Conv3d, weights: bool = True) -> nn.Conv3d:
    """outer(inner(x)) as one convolution, for a 1x1 `outer` (products in float64, stored in the weights'
    dtype); without `weights` only its shape, on the meta device."""
    if not weights:
        return nn.Conv3d(inner.in_channels, outer.out_channels, inner.kernel_size, inner.stride, inner.padding,
                         device="meta")
    w_outer = outer.weight.detach()[:, :, 0, 0, 0].double()
    w_inner = inner.weight.detach().double()
    weight = torch.einsum("oc,cikjl->oikjl", w_outer, w_inner)
    bias = torch.zeros(outer.out_channels, dtype=torch.float64, device=weight.device)
    if inner.bias is not None:
        bias = bias + w_outer @ inner.bias.detach().double()
    if outer.bias is not None:
        bias = bias + outer.bias.detach().double()
    conv = nn.Conv3d(inner.in_channels, outer.out_channels, inner.kernel_size, inner.stride, inner.padding,
                     device=weight.device, dtype=inner.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.to(inner.weight.dtype))
        conv.bias.copy_(bias.to(inner.weight.dtype))
    return conv.requires_grad_(False)
