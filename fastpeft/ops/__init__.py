"""torch.library custom ops: argument checks, allocation, kernel launch, fake and autograd rules."""
