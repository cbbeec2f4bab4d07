"""dropviz: a structured-dropout lab for PyTorch. The library never imports Streamlit."""
__version__ = "0.1.0"
