"""RadImageNet ResNet-50 (no classifier head), in the layout of the published PyTorch weights.

The published file (`RadImageNet-ResNet50_notop.pth`, converted from the RadImageNet Keras release and
hosted on Hugging Face in `MONAI/checkpoints`) is what MONAI's perceptual loss and NVIDIA's 2.5D FID
script load through torch.hub. Being a Keras conversion, it differs from torchvision's ResNet-50: every
convolution has a bias, the stride of a down-sampling block sits on its first 1x1 convolution, and batch
norms use eps 1.001e-5. The state-dict keys are `conv1.*`, `bn1.*`, `layer{1..4}.{block}.conv{1,2,3}.*`,
`...bn{1,2,3}.*` and `...downsample.{0,1}.*` (no `fc.*`).

Weights are read only from a local file (safetensors, or `torch.load(weights_only=True)`); nothing is
downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from MAISIEngine.errors import MaisiError

KERAS_BN_EPS = 1.001e-5
FEATURE_CHANNELS = 2048
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
"""(bottleneck width, blocks, stride of the first block) of the four stages of ResNet-50."""
EXPANSION = 4
MANIFEST_NAME = "radimagenet-resnet50"


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS)


class KerasBottleneck(nn.Module):
    """1x1 (strided) -> 3x3 -> 1x1 with biases, batch norms, and a projected shortcut when shapes change."""

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride)
        self.bn1 = _batch_norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = _batch_norm(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1)
        self.bn3 = _batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride),
                                            _batch_norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)


class RadImageNetResNet50(nn.Module):
    """Feature maps (N, 2048, H/32, W/32) of 3-channel slices; `features` averages them to (N, 2048)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = _batch_norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for index, (width, blocks, stride) in enumerate(STAGES, start=1):
            layers = [KerasBottleneck(channels, width, stride)]
            channels = width * EXPANSION
            layers += [KerasBottleneck(channels, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Spatially averaged feature vectors, as the FID takes them."""
        return self.forward(x).mean(dim=(2, 3))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a weights-only torch file (a bare state dict or one under 'state_dict')."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors come in many types
        raise MaisiError(f"cannot read feature weights {path.name} ({exc.__class__.__name__})",
                         "give RadImageNet-ResNet50_notop.pth or a .safetensors file of the same tensors") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MaisiError(f"{path.name} holds no state dict of tensors", "give RadImageNet-ResNet50_notop.pth")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_radimagenet(path: str | Path, device: torch.device | str = "cpu") -> RadImageNetResNet50:
    """The network with the file's weights, in eval mode; a file of another layout is refused, naming a key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MaisiError(f"feature weights {path} do not exist", _missing_hint())
    state = read_state_dict(path)
    network = RadImageNetResNet50()
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        which = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise MaisiError(f"{path.name} is not in the RadImageNet ResNet-50 layout ({len(missing)} keys missing, "
                         f"{len(unexpected)} unexpected; {which})",
                         "give RadImageNet-ResNet50_notop.pth (the Keras conversion MONAI uses)")
    wrong = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise MaisiError(f"{path.name}: tensor {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                         f"{tuple(expected[wrong[0]].shape)} expected", "give RadImageNet-ResNet50_notop.pth")
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return network.to(device).eval()


def _missing_hint() -> str:
    return (f"run `maisi weights download {MANIFEST_NAME}`, or `maisi weights import DIR` with "
            "RadImageNet-ResNet50_notop.pth in DIR, or pass --features FILE")


def resolve_features(spec: str) -> Path:
    """`radimagenet-resnet50` -> the cached published file; anything else is a local file path."""
    if spec.strip().lower() in (MANIFEST_NAME, "radimagenet_resnet50"):
        from MAISIEngine.weights.cache import CORRUPT, MISSING, status_of
        from MAISIEngine.weights.manifest import entry_by_name

        entry = entry_by_name(MANIFEST_NAME)
        assert entry is not None, "the weights manifest lists the RadImageNet file"
        state = status_of(entry)
        if state.status == MISSING:
            raise MaisiError("the RadImageNet ResNet-50 feature weights are not on this machine", _missing_hint())
        if state.status == CORRUPT:
            raise MaisiError(f"the cached RadImageNet weights are damaged: {state.path}", _missing_hint())
        return Path(state.path)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise MaisiError(f"feature weights {path} do not exist", _missing_hint())
    return path
