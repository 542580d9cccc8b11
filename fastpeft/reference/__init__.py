"""Ground-truth PyTorch implementations, written for clarity and mirroring PEFT's numerics."""
