"""Patchers: per-module-type fused forwards installed per instance."""
