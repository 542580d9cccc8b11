"""torch.library custom ops: schemas, fake and autograd rules; each calls the chosen backend."""
