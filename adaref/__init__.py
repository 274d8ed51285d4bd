"""adaref: the NumPy reference implementation of AdaEnsemble."""
__version__ = "0.1.0"
