"""XDD: deep representation learning with an information-theoretic loss, for OOD detection.

The core never imports streamlit.  See README.md for the layout.
"""
from xdd import openblas as _openblas

# Before anything imports numpy: its bundled OpenBLAS misdetects CPUs newer than itself.
_openblas.configure()

__version__ = "0.1.0"
