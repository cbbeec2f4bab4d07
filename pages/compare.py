"""Compare: every regularizer (or a chosen few) on the same image, seed and parameters, side by side."""
from __future__ import annotations

import streamlit as st

from dropviz.regularizers import REGISTRY
from dropviz.ui.controls import seed_control, share_link, shared_controls, warn_unusable_url_value
from dropviz.ui.image_input import image_sidebar
from dropviz.ui.panels import visualize_comparison, visualize_drop_rate

st.title("Compare methods")

picked, x = image_sidebar(key="")

warn_unusable_url_value("methods", options=[spec.display_name for spec in REGISTRY.values()])
# One row that wraps on a narrow page instead of squeezing the buttons.
with st.container(horizontal=True, vertical_alignment="bottom"):
    names = st.pills("Methods", list(REGISTRY), selection_mode="multi", default=list(REGISTRY), key="methods",
                     format_func=lambda name: REGISTRY[name].display_name, bind="query-params", wrap=True)
    seed = seed_control(key="")
    share_link()
if not names:
    st.info("Choose at least one method.")
    st.stop()
params = shared_controls([REGISTRY[name] for name in names], key="", wrap=True)

st.caption("Each method takes the parameters it uses from the controls above; all share the image and the seed.")
visualize_comparison(names, params, x, seed, key="compare_", image_id=picked.id)

st.header("Drop rate vs block size")
st.markdown(
    "Does a DropBlock really drop `drop_prob` of the units? Each implementation gets maps of ones; the share "
    "of zeros in its output, averaged over draws, is plotted against `block_size` for four map sizes. The "
    "dotted line is the requested rate; an **x** marks a setting the implementation refuses (hover it)."
)
visualize_drop_rate(params.get("drop_prob", 0.1), key="compare_")
