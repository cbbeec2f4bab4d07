"""Streamlit helpers shared by the pages: the only package of dropviz that imports streamlit."""
