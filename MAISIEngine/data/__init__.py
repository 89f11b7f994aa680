"""Package data: the MAISI label dictionary, HU statistics and modality ids (pure data)."""
