"""The PyTorch path (backend "torch"): each method's math in plain PyTorch, fast on the CPU."""
