"""dropviz dashboard entry point: `streamlit run app.py` (or `make run`).

Only the page list and the navigation live here; each page is a file under pages/.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent

# One line per page: (file, title, material icon, what the page is for).
# A page whose file does not exist yet is left out, so the app runs while pages are being written.
PAGES: list[tuple[str, str, str, str]] = [
    ("pages/home.py", "Home", ":material/home:", "What dropviz is and which methods it covers."),
    ("pages/explorer.py", "Mask Explorer", ":material/grid_on:", "One method on one image: every stage of its mask, with the numbers."),
    ("pages/compare.py", "Compare", ":material/compare:", "All methods side by side on the same image and seed; drop rate vs block size."),
    ("pages/lecture.py", "Lecture", ":material/school:", "The story of structured dropout, step by step, from a link."),
    ("pages/features.py", "Feature Maps", ":material/layers:", "A ResNet's feature maps at one layer, before and after a regularizer, and how its predictions move."),
    ("pages/training.py", "Training", ":material/monitoring:", "Background training runs with a regularizer; live accuracy curves, overlaid."),
]


def available_pages() -> list[tuple[str, str, str, str]]:
    """The entries of PAGES whose file exists, in order."""
    return [entry for entry in PAGES if (ROOT / entry[0]).is_file()]


def main() -> None:
    logo = str(ROOT / "assets" / "logo.svg")
    st.set_page_config(page_title="dropviz", page_icon=logo, layout="wide")
    st.logo(logo, size="large")
    pages = [st.Page(path, title=title, icon=icon, default=index == 0)
             for index, (path, title, icon, _) in enumerate(available_pages())]
    st.navigation(pages).run()


# Streamlit runs this file as __main__; tests import it for PAGES without starting an app.
if __name__ == "__main__":
    main()
