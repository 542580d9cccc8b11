"""The native path (backends "cpp" and "cuda"): methods running in the fastpeft._C extension."""
