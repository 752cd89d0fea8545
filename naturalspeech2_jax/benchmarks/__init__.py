"""Speed benchmarks and research probes: not imported by ``train/`` or the models."""
