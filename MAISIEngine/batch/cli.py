"""`maisi batch SPEC.yaml -o DIR`: many samples, resumable; under torchrun each rank takes its share."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from MAISIEngine.batch.spec import __doc__ as SPEC_HELP
from MAISIEngine.batch.spec import read_spec


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("batch", help="generate many samples from a spec (resumable, torchrun-aware)",
                              description="Generate many synthetic CTs. Run under `torchrun --nproc_per_node N "
                                          "-m MAISIEngine.cli batch ...` to spread them over N processes/GPUs."
                                          + (SPEC_HELP or ""),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path, help="batch spec (YAML)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    p.add_argument("--quality-retries", type=int, help="override the spec's quality_retries")


def run(args: argparse.Namespace) -> int:
    from MAISIEngine.batch.runner import run_batch

    spec = read_spec(args.spec)
    if args.quality_retries is not None:
        spec.quality_retries = args.quality_retries
    report = run_batch(spec, args.output, log=lambda m: print(m, file=sys.stderr))
    if report is not None:
        print(json.dumps(report, indent=2))
        return 0 if report["complete"] else 1
    return 0
