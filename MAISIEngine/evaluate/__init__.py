"""`maisi evaluate`: the measures MAISI is judged by, for the user's own data.

- `fid`: 2.5D Fréchet distance between real and synthetic CT sets on RadImageNet ResNet-50 features of
  axial, coronal and sagittal slices (the paper's Tables 2-3);
- `vae`: PSNR / SSIM (and a perceptual distance when feature weights are at hand) of the VAE's
  encode-decode through the tensor-splitting path that generation uses;
- `quality`: the paper's HU-median check over a whole batch, with pass rates per organ group.

Modules: `sources` (which files), `preprocess` (the reference's CT preprocessing), `slicing` (2.5D
slices), `radimagenet` (the feature network), `frechet` (the distance), `fid`, `vae`, `batch_quality`,
`feature_cache` and `cli`; each measure's module formats its own table.
"""
