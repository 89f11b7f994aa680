"""Many synthetic CTs: a YAML spec, torchrun ranks, resumable per-sample outputs, a quality gate."""
