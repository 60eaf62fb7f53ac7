"""The Numba CPU backend: the module generator (``codegen``), the loop executors generated
modules run under (``runtime``), and the libm and vectorisable math they call (``libm``,
``vector_math``)."""
