"""open-r1-egsw: GRPO + Entropy-Guided Sequence Weighting recipes on top of TRL."""

__version__ = "0.1.0"
