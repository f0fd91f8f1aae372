"""XDD: deep representation learning with an information-theoretic loss, for OOD detection.

The core never imports streamlit.  See README.md for the layout.
"""
__version__ = "0.1.0"
