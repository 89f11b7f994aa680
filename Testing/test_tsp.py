"""Exact tensor-splitting (TSP) decode/encode: equality with the unsplit MONAI network, planner, bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

from MAISIEngine import tsp
from MAISIEngine.errors import MaisiError
from MAISIEngine.presets import load_preset
from MAISIEngine.tsp.executor import Executor, PassSpec
from MAISIEngine.tsp.graph import decoder_graph, encoder_graph, fusable_shortcuts, fuse_shortcuts
from MAISIEngine.tsp.planner import _CostModel, device_model
from MAISIEngine.tsp.pool import BufferPool

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4
TINY = {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "latent_channels": 4, "num_channels": [8, 16, 32],
        "num_res_blocks": [2, 1, 1], "norm_num_groups": 4, "norm_eps": 1e-6, "attention_levels": [False, False, False],
        "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False, "norm_float16": False,
        "num_splits": 1, "dim_split": 1}


def tiny_vae(seed: int = 0, **changes) -> AutoencoderKlMaisi:
    torch.manual_seed(seed)
    return AutoencoderKlMaisi(**{**TINY, **changes}).eval()


def smallest_budget(planner, shape, model, **kw) -> int:
    """The smallest budget the planner accepts, read from its refusal of a 1-byte budget."""
    with pytest.raises(MaisiError) as info:
        planner(shape, model, max_memory_bytes=1, **kw)
    return int(float(re.search(r"smallest that works is ([0-9.]+) MiB", info.value.message).group(1)) * (1 << 20))


def tight_plan(planner, shape, model, **kw):
    """A plan with little memory to spare, so that passes are split into several segments."""
    return planner(shape, model, max_memory_bytes=int(1.3 * smallest_budget(planner, shape, model, **kw)), **kw)


def unsplit_decode(model: AutoencoderKlMaisi, latent: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.decode_stage_2_outputs(latent)


def unsplit_encode(model: AutoencoderKlMaisi, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        return model.encode(image)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions: one thread avoids waiting on a busy second core at every operation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vae() -> AutoencoderKlMaisi:
    return tiny_vae()


@pytest.fixture(scope="module")
def rflow_vae() -> AutoencoderKlMaisi:
    """The real rflow-ct VAE architecture (random weights), built as the preset builds it (num_splits 4)."""
    torch.manual_seed(0)
    return AutoencoderKlMaisi(**{**load_preset("rflow-ct").autoencoder, "norm_float16": False}).eval()


@pytest.mark.parametrize("latent_size", [(7, 5, 6), (9, 4, 5), (3, 11, 4)])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_decode_equals_unsplit_network_for_odd_sizes_and_every_axis(vae, latent_size, axis):
    torch.manual_seed(1)
    latent = torch.randn(1, 4, *latent_size)
    reference = unsplit_decode(vae, latent)
    plan = tight_plan(tsp.plan_decode, latent.shape[1:], vae, axis=axis)
    assert plan.max_segments > 1 and plan.axis == axis  # really split
    out = tsp.decode(vae, latent, plan=plan)
    assert out.shape == reference.shape == (1, 1, *(4 * s for s in latent_size))
    assert float((out - reference).abs().max()) <= TOL
    assert float(reference.abs().max()) > 0.1  # the comparison is not between near-zero outputs


@pytest.mark.parametrize("segments", [1, 2, 3, 7, 40])
def test_every_segment_count_and_kept_set_gives_the_same_decode(vae, segments):
    """Hand-made plans: every pass split into `segments` steps, alternating kept / recomputed tensors."""
    torch.manual_seed(2)
    latent = torch.randn(1, 4, 6, 5, 7)
    reference = unsplit_decode(vae, latent)
    graph = decoder_graph(vae)
    conv = vae.post_quant_conv.conv
    z = torch.nn.functional.conv3d(latent, conv.weight, conv.bias)
    normalised = sorted(graph.normalised())
    keep = set(normalised[segments % 2 :: 2])
    targets = [n.index for n in graph.nodes if n.index in graph.normalised() or n.index == graph.output]
    passes = [PassSpec(t, segments, t in keep) for t in targets]
    out = torch.empty_like(reference)
    with torch.inference_mode():
        Executor(graph, passes, [torch.device("cpu")], torch.float32, axis=segments % 3).run(z, out)
    assert float((out - reference).abs().max()) <= TOL


@pytest.mark.parametrize("segments", [1, 3, 40])
def test_fused_shortcuts_and_reused_first_rows_give_the_same_decode(vae, segments):
    """Shortcuts fused into their source convolution; tensors computed twice reuse their first rows."""
    torch.manual_seed(6)
    latent = torch.randn(1, 4, 6, 5, 7)
    reference = unsplit_decode(vae, latent)
    base = decoder_graph(vae)
    fusable = fusable_shortcuts(base)
    assert [base.nodes[i].name for i in fusable] == ["decoder.blocks.3.nin_shortcut", "decoder.blocks.5.nin_shortcut"]
    graph = fuse_shortcuts(base, tuple(fusable))
    assert all(graph.nodes[i].pre == "upsample" and graph.nodes[i].kernel == 3 for i in fusable)
    twice = [n.index for n in graph.nodes if n.name.endswith("conv1")]  # statistics only, recomputed later
    keep = {n.index: False for n in graph.nodes if n.index not in (0, graph.output, *twice)}
    cost = _CostModel(graph, (6, 5, 7), 4, 1, device_model(torch.device("cpu"), torch.float32), 0, 0)
    lengths = [s[0] for s in graph.sizes((6, 5, 7))]
    outcome = cost.simulate(keep, float("inf"), partial={v: max(1, lengths[v] // 2) for v in twice})
    assert outcome is not None and sum(p.keep_rows > 0 for p in outcome.passes) == len(twice)
    passes = [PassSpec(p.target, segments, p.store, keep_rows=p.keep_rows) for p in outcome.passes]
    conv = vae.post_quant_conv.conv
    z = torch.nn.functional.conv3d(latent, conv.weight, conv.bias)
    out = torch.empty_like(reference)
    with torch.inference_mode():
        Executor(graph, passes, [torch.device("cpu")], torch.float32, axis=0).run(z, out)
    assert float((out - reference).abs().max()) <= TOL
    assert float(reference.abs().max()) > 0.1


def test_buffer_pool_reuses_a_buffer_only_once_nothing_views_it():
    pool = BufferPool()
    first = pool.empty((1, 4, 3, 5, 6), torch.float32)
    address = first.data_ptr()
    assert first.is_contiguous(memory_format=torch.channels_last_3d)
    view = first[:, :, 1:]
    del first
    assert pool.empty((1, 4, 3, 5, 6), torch.float32).data_ptr() != address  # a view still uses it
    del view
    smaller = pool.empty((1, 4, 2, 5, 6), torch.float32)  # a smaller request takes the free buffer
    assert smaller.data_ptr() == address and smaller.shape == (1, 4, 2, 5, 6)
    assert smaller.stride() == (240, 1, 120, 24, 4)
    pool.clear()
    assert pool.nbytes == 0


def test_in_place_onednn_convolution_is_bit_identical():
    torch.manual_seed(7)
    graph = decoder_graph(tiny_vae())
    executor = Executor(graph, [], [torch.device("cpu")], torch.float32, axis=0)
    x = torch.randn(1, 16, 12, 20, 20).contiguous(memory_format=torch.channels_last_3d)
    weight = torch.randn(8, 16, 3, 3, 3).contiguous(memory_format=torch.channels_last_3d)
    bias = torch.randn(8)
    with torch.inference_mode():
        expected = torch.ops.aten.mkldnn_convolution(x, weight, bias, [0, 1, 1], [1, 1, 1], [1, 1, 1], 1)
        plain = torch.nn.functional.conv3d(x, weight, bias, padding=(0, 1, 1))
        assert float((expected - plain).abs().max()) <= 1e-4 * float(plain.abs().max())
        for fresh in (False, True):
            for _ in range(2):  # the second call reuses the first call's buffer
                got = executor._onednn_conv(x, weight, bias, 1, (0, 1, 1), fresh)
                assert got.shape == expected.shape and torch.equal(got, expected)


@pytest.mark.parametrize("image_size,axis", [((20, 28, 12), 0), ((12, 16, 36), 2), ((28, 12, 20), 1)])
def test_encode_equals_unsplit_network(vae, image_size, axis):
    torch.manual_seed(3)
    image = torch.rand(1, 1, *image_size)
    mu, sigma = unsplit_encode(vae, image)
    plan = tight_plan(tsp.plan_encode, image.shape[1:], vae, axis=axis)
    assert plan.max_segments > 1
    z_mu = tsp.encode(vae, image, plan=plan)
    assert z_mu.shape == mu.shape == (1, 4, *(s // 4 for s in image_size))
    assert float((z_mu - mu).abs().max()) <= TOL
    z_mu2, z_sigma = tsp.encode(vae, image, plan=plan, return_sigma=True)
    assert float((z_mu2 - mu).abs().max()) <= TOL
    assert float(((z_sigma - sigma) / sigma).abs().max()) <= TOL


def test_several_devices_give_the_same_result(vae):
    torch.manual_seed(4)
    latent = torch.randn(2, 4, 8, 6, 5)  # a batch of two as well
    reference = unsplit_decode(vae, latent)
    budget = int(1.3 * smallest_budget(tsp.plan_decode, latent.shape[1:], vae, devices=["cpu", "cpu"]))
    out = tsp.decode(vae, latent, devices="cpu,cpu", max_memory_bytes=budget)  # as --devices gives them
    assert float((out - reference).abs().max()) <= TOL
    image = torch.rand(1, 1, 24, 16, 20)
    mu, _ = unsplit_encode(vae, image)
    assert float((tsp.encode(vae, image, devices=["cpu", "cpu", "cpu"]) - mu).abs().max()) <= TOL


def test_real_rflow_widths_decode_and_encode_at_a_small_size(rflow_vae):
    assert rflow_vae.decoder.blocks[0].num_splits == 4  # MONAI's own splitting is configured, TSP ignores it
    unsplit = AutoencoderKlMaisi(**{**load_preset("rflow-ct").autoencoder, "norm_float16": False, "num_splits": 1}).eval()
    unsplit.load_state_dict(rflow_vae.state_dict())  # MONAI's num_splits 4 path fails on sizes this small
    torch.manual_seed(5)
    latent = torch.randn(1, 4, 6, 5, 7)
    reference = unsplit_decode(unsplit, latent)
    plan = tight_plan(tsp.plan_decode, latent.shape[1:], rflow_vae)
    assert plan.max_segments > 1 and plan.predicted_peak_bytes <= plan.budget_bytes
    assert float((tsp.decode(rflow_vae, latent, plan=plan) - reference).abs().max()) <= TOL
    image = torch.rand(1, 1, 24, 20, 28)
    mu, _ = unsplit_encode(unsplit, image)
    plan = tight_plan(tsp.plan_encode, image.shape[1:], rflow_vae)
    assert plan.max_segments > 1
    assert float((tsp.encode(rflow_vae, image, plan=plan) - mu).abs().max()) <= TOL


def test_official_raw_state_dict_loads_unchanged_and_decodes_exactly(tmp_path, rflow_vae):
    from MAISIEngine.networks import load_network

    unsplit = AutoencoderKlMaisi(**{**load_preset("rflow-ct").autoencoder, "norm_float16": False, "num_splits": 1}).eval()
    unsplit.load_state_dict(rflow_vae.state_dict())
    path = tmp_path / "autoencoder_v1.pt"
    torch.save(rflow_vae.state_dict(), path)  # the official file is a raw state dict
    preset = load_preset("rflow-ct")
    loaded, _ = load_network("autoencoder", preset, path)
    assert loaded.decoder.blocks[1].norm1.norm_float16 is True  # built exactly as the preset says
    for key, value in rflow_vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.manual_seed(6)
    latent = torch.randn(1, 4, 5, 4, 6)
    out = tsp.decode(loaded, latent)  # float32 on the CPU: the unsplit float32 network is the reference
    assert float((out - unsplit_decode(unsplit, latent)).abs().max()) <= TOL


def test_half_precision_follows_monai_float16_numerics(vae):
    """With norm_float16 MONAI only runs under autocast; TSP in float16 stays close to that and to float32."""
    half_vae = tiny_vae(norm_float16=True)
    half_vae.load_state_dict(vae.state_dict())
    torch.manual_seed(7)
    latent = torch.randn(1, 4, 6, 5, 4)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
        monai_half = half_vae.decode_stage_2_outputs(latent).float()
    plan = tight_plan(tsp.plan_decode, latent.shape[1:], half_vae, dtype=torch.float16)
    assert plan.dtype == "float16" and plan.max_segments > 1
    ours = tsp.decode(half_vae, latent, plan=plan)
    exact = unsplit_decode(vae, latent)
    scale = float(exact.abs().max())
    assert ours.dtype == torch.float32  # the caller's dtype
    assert float((ours - exact).abs().max()) <= 2e-2 * scale
    assert float((ours - monai_half).abs().max()) <= 2e-2 * scale
    assert float((ours - exact).abs().max()) > 0  # it did compute in half precision


def test_plan_from_a_preset_without_weights_and_its_description():
    plan = tsp.plan_decode((32, 32, 32), load_preset("rflow-ct"), max_memory_bytes=800 << 20)
    assert plan.kind == "decode" and plan.output_shape == (1, 128, 128, 128)
    assert plan.predicted_peak_bytes <= 800 << 20
    assert plan.max_segments > 1 and plan.stored  # a tight budget: segments, some tensors recomputed
    text = tsp.format_plan(plan)
    assert "latent 4 x 32x32x32 -> image 1 x 128x128x128" in text
    assert "predicted peak" in text and "cpu (float32)" in text
    roomy = tsp.plan_decode((32, 32, 32), load_preset("rflow-ct"), max_memory_bytes=8 << 30)
    assert roomy.predicted_seconds < plan.predicted_seconds  # more memory: fewer recomputations


def test_predicted_peak_is_bounded_by_segments_not_volume():
    preset = load_preset("rflow-ct")
    budget = 900 << 20
    small = tsp.plan_decode((32, 32, 32), preset, max_memory_bytes=budget)
    large = tsp.plan_decode((32, 32, 96), preset, max_memory_bytes=budget)  # 3x the volume, same budget
    assert small.predicted_peak_bytes <= budget and large.predicted_peak_bytes <= budget
    assert large.max_segments > small.max_segments


def test_too_small_a_budget_names_the_smallest_that_works(vae):
    with pytest.raises(MaisiError) as info:
        tsp.plan_decode((7, 5, 6), vae, max_memory_bytes=200_000)
    assert re.search(r"budget of 0.2 MiB is too small for decoding a 7x5x6 latent \(28x20x24 image\) "
                     r"\(the smallest that works is [0-9.]+ MiB\)", info.value.message), info.value.message
    assert "max_memory_bytes" in info.value.hint
    smallest = smallest_budget(tsp.plan_decode, (7, 5, 6), vae)
    plan = tsp.plan_decode((7, 5, 6), vae, max_memory_bytes=smallest)
    assert plan.predicted_peak_bytes <= smallest
    torch.manual_seed(8)
    latent = torch.randn(1, 4, 7, 5, 6)
    assert float((tsp.decode(vae, latent, plan=plan) - unsplit_decode(vae, latent)).abs().max()) <= TOL


@pytest.mark.parametrize("device,words", [("cuda:7", "cuda"), ("banana", "unknown device"), ("meta", "not supported")])
def test_devices_that_do_not_exist_are_refused(vae, device, words):
    with pytest.raises(MaisiError) as info:
        tsp.plan_decode((4, 4, 4), vae, devices=[device])
    assert words in info.value.message
    with pytest.raises(MaisiError):
        tsp.decode(vae, torch.randn(1, 4, 4, 4, 4), devices=[device])


def test_bad_inputs_are_refused_with_one_clear_message(vae):
    with pytest.raises(MaisiError, match="5-D tensor"):
        tsp.decode(vae, torch.randn(4, 4, 4, 4))
    with pytest.raises(MaisiError, match="has 3 channels; this VAE takes 4"):
        tsp.decode(vae, torch.randn(1, 3, 4, 4, 4))
    with pytest.raises(MaisiError, match="NaN"):
        tsp.decode(vae, torch.full((1, 4, 4, 4, 4), float("nan")))
    with pytest.raises(MaisiError, match="not divisible by 4"):
        tsp.encode(vae, torch.rand(1, 1, 16, 18, 16))
    with pytest.raises(MaisiError, match="not divisible by 4"):
        tsp.plan_encode((16, 16, 30), vae)
    with pytest.raises(MaisiError, match="split axis 3"):
        tsp.plan_decode((4, 4, 4), vae, axis=3)
    plan = tsp.plan_decode((4, 4, 4), vae)
    with pytest.raises(MaisiError, match="plan was made for decode of"):
        tsp.decode(vae, torch.randn(1, 4, 5, 4, 4), plan=plan)
    with pytest.raises(MaisiError, match="unsupported dtype"):
        tsp.decode(vae, torch.randn(1, 4, 4, 4, 4), dtype="int8")


def test_attention_vae_is_refused_by_name():
    model = tiny_vae(attention_levels=[False, False, True])
    with pytest.raises(MaisiError, match="SpatialAttentionBlock"):
        decoder_graph(model)
    with pytest.raises(MaisiError, match="SpatialAttentionBlock"):
        encoder_graph(model)


def test_progress_reports_every_pass(vae):
    seen = []
    tsp.decode(vae, torch.randn(1, 4, 5, 5, 5), progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == list(range(1, seen[-1][1] + 1))


def test_gpu_benchmark_script_runs_on_the_cpu(tmp_path):
    """bench/gpu_tsp.py in --smoke mode: the prepared GPU run cannot fail on a typo."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_tsp.py"), "--smoke"], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = (tmp_path / "gpu_tsp.txt").read_text()
    assert "16x16x24" in summary and "TSP float32 vs MONAI unsplit float32" in summary
    diff = float(re.search(r"float32 vs MONAI unsplit float32: max \|diff\| ([0-9.e+-]+)", summary).group(1))
    assert diff <= TOL


def test_cpu_threads_use_all_threads_unless_the_machine_is_busy():
    from MAISIEngine.tsp.host import CpuThreads

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu = CpuThreads([torch.device("cpu")])
        seen: list[int] = []
        for _ in range(3):
            cpu.heavy(("conv",), lambda: seen.append(torch.get_num_threads()))
        assert seen == [2, 2, 2]  # an idle machine: no trial with one thread
        assert torch.get_num_threads() == 1  # bookkeeping between steps runs on one thread
        cpu.utilisation = 0.3  # as measured when other jobs hold the second core
        cpu.heavy(("conv",), lambda: seen.append(torch.get_num_threads()))
        assert seen[-1] == 1  # now one thread is tried
    finally:
        torch.set_num_threads(threads)
