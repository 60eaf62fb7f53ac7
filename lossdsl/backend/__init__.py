"""Code generation: the target-independent body printer (``emit``), the Numba CPU (``cpu``) and
CUDA (``cuda``) backends, each beside the run-time code its generated modules import, and the
``jax.numpy`` printer (``jax``)."""
