"""Lecture mode: the story of structured dropout as chapters of steps, one URL per view.

Importable without Streamlit; ``pages/lecture.py`` only lays out what this package computes.
"""
from .chapters import CHAPTERS, CONTROLS, defaults
from .model import HIDE_FLAGS, Chapter, Step, View, parse_control, parse_view, view_query

__all__ = ["CHAPTERS", "CONTROLS", "defaults", "HIDE_FLAGS", "Chapter", "Step", "View", "parse_control",
           "parse_view", "view_query"]
