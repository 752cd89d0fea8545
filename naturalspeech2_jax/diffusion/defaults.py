"""What synthesis uses when the caller names no sampler or steps: the synthesizer, the speech
command lines, the demo and the sample writers. Standard library only, so that the command lines
can show their defaults in ``--help`` before JAX loads.

12 DPM-Solver++(2M) steps match 150 Euler steps (the paper's sampler) on real held-out pairs: WER
and speaker similarity within noise, with and without classifier-free guidance, at 1/12 of the
network evaluations (docs/experiments/speed.md, "inference with fewer network evaluations").
Voice conversion (DDIM inversion, then sampling) and singing keep their own, measured defaults.
"""

DEFAULT_SAMPLER = "dpm++2m"
DEFAULT_STEPS = 12
