"""GPU evidence without a GPU: each launch compiled for an arch, inspected, costed by a model."""
