"""`python -m dropviz.ui.launch run app.py ...`: the `streamlit` command, with app.py as the only router.

Streamlit decides how to route an app's *first* session before any script runs: when a ``pages/`` folder
sits beside the entry script it assumes a legacy folder-based app, so a shared deep link
(``/lecture?chapter=...``) opened on a freshly started server runs ``pages/lecture.py`` on its own, without
app.py's navigation, logo and page config. Only after app.py has called ``st.navigation`` once is that
guess dropped. Our ``pages/`` holds ``st.navigation`` pages, so we drop the guess before the server starts.
"""
from __future__ import annotations

import sys

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli

if __name__ == "__main__":
    PagesManager.uses_pages_directory = False
    sys.exit(cli.main())
