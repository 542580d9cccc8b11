"""Patchers: per-method fused forwards installed per module instance, and their engine."""
