"""The primitives the compiler implements itself (``primitives``)."""
