"""Official checkpoint layouts load strictly into the real MAISI architectures; unsafe files are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.modeldir import save_official_layout
from MAISIEngine.networks import (build_network, count_parameters, extract_checkpoint, load_network,
                                  read_checkpoint_file, remap_legacy_keys)
from MAISIEngine.presets import load_preset

EXPECTED_PARAMS_M = {  # MAISI_FACTS.md
    ("rflow-ct", "autoencoder"): 20.94,
    ("rflow-ct", "diffusion_unet"): 180.5,
    ("rflow-ct", "controlnet"): 72.0,
    ("ddpm-ct", "diffusion_unet"): 169.4,
    ("ddpm-ct", "controlnet"): 68.6,
}


@pytest.mark.parametrize("preset_name,role", sorted(EXPECTED_PARAMS_M))
def test_real_architectures_have_the_published_sizes(preset_name: str, role: str) -> None:
    model = build_network(role, load_preset(preset_name))
    assert count_parameters(model) / 1e6 == pytest.approx(EXPECTED_PARAMS_M[(preset_name, role)], abs=0.06)


@pytest.mark.parametrize("preset_name", ["rflow-ct", "ddpm-ct"])
@pytest.mark.parametrize("role", ["autoencoder", "diffusion_unet", "controlnet"])
def test_official_layout_loads_strictly(tmp_path: Path, preset_name: str, role: str) -> None:
    preset = load_preset(preset_name)
    torch.manual_seed(1)
    source = build_network(role, preset)
    path = tmp_path / f"{role}.pt"
    save_official_layout(path, role, source, scale_factor=0.75)
    loaded, checkpoint = load_network(role, preset, path)
    first_key = next(iter(source.state_dict()))
    assert torch.equal(loaded.state_dict()[first_key], source.state_dict()[first_key])
    if role == "diffusion_unet":
        assert checkpoint.scale_factor == pytest.approx(0.75)
    path.unlink()  # up to 700 MB each: do not let twelve of them pile up before the session ends


def test_vae_wrapped_in_unet_state_dict_is_understood(tmp_path: Path) -> None:
    preset = load_preset("demo")
    source = build_network("autoencoder", preset)
    torch.save({"unet_state_dict": source.state_dict()}, tmp_path / "vae.pt")
    loaded, _ = load_network("autoencoder", preset, tmp_path / "vae.pt")
    key = "decoder.blocks.0.conv.conv.weight"
    assert torch.equal(loaded.state_dict()[key], source.state_dict()[key])


def test_missing_and_renamed_keys_are_named(tmp_path: Path) -> None:
    preset = load_preset("demo")
    state = build_network("diffusion_unet", preset).state_dict()
    state["renamed.weight"] = state.pop("conv_in.conv.weight")
    torch.save({"unet_state_dict": state, "scale_factor": torch.tensor(1.0)}, tmp_path / "unet.pt")
    with pytest.raises(MaisiError) as info:
        load_network("diffusion_unet", preset, tmp_path / "unet.pt")
    assert "missing keys: conv_in.conv.weight" in info.value.message
    assert "unexpected keys: renamed.weight" in info.value.message


def test_wrong_architecture_names_the_shape(tmp_path: Path) -> None:
    rflow_vae = build_network("autoencoder", load_preset("demo"))
    torch.save(rflow_vae.state_dict(), tmp_path / "vae.pt")
    tiny = load_preset("demo").with_changes(autoencoder={**load_preset("demo").autoencoder, "num_channels": [8, 32, 64]})
    with pytest.raises(MaisiError, match="has shape"):
        load_network("autoencoder", tiny, tmp_path / "vae.pt")


def test_legacy_attention_names_are_remapped() -> None:
    model = build_network("diffusion_unet", load_preset("demo"))
    state = model.state_dict()
    legacy = {}
    for key, value in state.items():
        key = key.replace(".attn.to_q.", ".to_q.").replace(".attn.out_proj.", ".proj_attn.")
        legacy[key] = value
    assert "middle_block.attention.to_q.weight" in legacy
    remapped = remap_legacy_keys(legacy, set(state))
    assert set(remapped) == set(state)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MAISI_MARKER']}",))


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setenv("MAISI_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"unet_state_dict": _RunsCode()}, handle)
    with pytest.raises(MaisiError, match="refused to load evil.pt"):
        read_checkpoint_file(path)
    assert not marker.exists()


def test_safetensors_carry_the_scale_factor(tmp_path: Path) -> None:
    from MAISIEngine.networks import save_safetensors

    preset = load_preset("demo")
    model = build_network("diffusion_unet", preset)
    save_safetensors(tmp_path / "u.safetensors", model, {"scale_factor": "0.5"}, dtype=torch.float16)
    checkpoint = extract_checkpoint(read_checkpoint_file(tmp_path / "u.safetensors"), "diffusion_unet")
    assert checkpoint.scale_factor == 0.5
    assert checkpoint.state_dict["conv_in.conv.weight"].dtype == torch.float16
