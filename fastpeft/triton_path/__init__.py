"""The Triton path (backend "triton"): launch configs per target, allocation and launches."""
