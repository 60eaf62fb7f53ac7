"""The package version, in a module of its own so that modules the package imports at start-up
(the kernel cache, the compiler driver) can read it without importing ``lossdsl`` itself."""

__version__ = "0.1.0"
