"""MAISIEngine: synthetic CT generation with MAISI (VAE + latent diffusion + ControlNet).

The engine imports no Qt and no Slicer; every front end drives it through the CLI or the worker.
"""

__version__ = "0.1.0"
