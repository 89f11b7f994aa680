"""Training of the three MAISI stages (paper Fig. 2): VAE-GAN, latent diffusion, ControlNet.

`maisi train vae|diffusion|controlnet` drives the functions here. Every stage writes into one model
directory (`preset.json` plus weights in the official layouts), so `maisi generate --model DIR` loads
what was trained, and later stages pick up the networks trained by earlier ones from the same folder.
Runs are deterministic by seed: the batch, noise and timesteps of step `s` depend only on the seed,
`s` and the sample's slot in the global batch, so an interrupted run resumes identically and a run
under `torchrun` sees the same data as a single process with the same global batch.
"""

from MAISIEngine.train.config import STAGES, TrainConfig

__all__ = ["STAGES", "TrainConfig"]
