"""Bundled real capture (vLLM 0.32.0 CPU, aggregated) for `phaselens demo`."""
