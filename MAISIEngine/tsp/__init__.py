"""Exact, memory-bounded tensor-splitting (TSP) decoding and encoding for the MAISI VAE.

`decode(autoencoder, latent)` and `encode(autoencoder, image)` run MONAI's `AutoencoderKlMaisi` (official
weights, unchanged) over segments of one axis: every convolution gets the halo it needs and every
GroupNorm uses whole-tensor statistics, so the result equals the unsplit network up to floating-point
rounding (no sliding windows, no blending, no seams). A planner (`plan_decode`, `plan_encode`) picks
which intermediate tensors to keep, where, and the segment sizes, from the device's free memory or a
given budget; `format_plan` prints a plan.
"""

from MAISIEngine.tsp.api import decode, encode, plan_decode, plan_encode
from MAISIEngine.tsp.planner import Plan, format_plan, resolve_devices

__all__ = ["Plan", "decode", "encode", "format_plan", "plan_decode", "plan_encode", "resolve_devices"]
