"""`maisi info`: presets, cached weights with their status, devices with free memory, decode plans."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from MAISIEngine import __version__
from MAISIEngine.commands.common import parse_memory
from MAISIEngine.presets import load_preset, shipped_preset_names


def device_table() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"device": "cpu", "name": "CPU", "threads": torch.get_num_threads()}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            rows.append({"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index),
                         "free_gb": round(free / 2**30, 2), "total_gb": round(total / 2**30, 2)})
    return rows


def weights_rows(name: str) -> dict[str, Any]:
    preset = load_preset(name)
    try:
        from MAISIEngine.weights.resolve import weights_status
    except ImportError:
        return {}
    return {role: {"path": str(entry[0]), "present": bool(entry[1]), "verified": bool(entry[2])}
            for role, entry in weights_status(preset).items()}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="presets, weights, devices, decode plans")
    p.add_argument("--plan", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="print the TSP decode plan for an output of this size")
    p.add_argument("--model", default="rflow-ct", help="model whose VAE the plan is for (default rflow-ct)")
    p.add_argument("--device", default="auto", help="device to plan for")
    p.add_argument("--max-gpu-memory", default=None, help="memory budget to plan for, e.g. 16G")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    if args.plan:
        from MAISIEngine import tsp
        from MAISIEngine.geometry import check_size
        from MAISIEngine.models import resolve_device

        preset = load_preset(args.model)
        size = check_size(preset, args.plan)
        device = resolve_device(args.device)
        latent = [s // preset.latent_downsample for s in size]
        plan = tsp.plan_decode(latent, preset, devices=str(device), max_memory_bytes=parse_memory(args.max_gpu_memory))
        print(f"decode plan for {preset.name}, output {size[0]}x{size[1]}x{size[2]} (latent {latent[0]}x{latent[1]}x{latent[2]})")
        print(tsp.format_plan(plan))
        return 0
    info = {
        "engine_version": __version__,
        "torch": torch.__version__,
        "presets": {name: {"description": load_preset(name).description, "weights": weights_rows(name)}
                    for name in shipped_preset_names()},
        "devices": device_table(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"MAISIEngine {__version__} (torch {torch.__version__})\n\nPresets and weights:")
    for name, entry in info["presets"].items():
        print(f"  {name}: {entry['description']}")
        for role, status in entry["weights"].items():
            state = "verified" if status["verified"] else "present" if status["present"] else "missing"
            print(f"    {role:<15} {state:<9} {status['path']}")
    print("\nDevices:")
    for row in info["devices"]:
        extra = f"{row['free_gb']} GB free of {row['total_gb']} GB" if "free_gb" in row else f"{row['threads']} threads"
        print(f"  {row['device']:<8} {row['name']}  {extra}")
    return 0

