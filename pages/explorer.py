"""Mask Explorer: one regularizer on one image, every stage of its explain() in a row, with the numbers."""
from __future__ import annotations

import streamlit as st

from dropviz.regularizers import Param
from dropviz.ui.controls import (METHOD_CONTROL_WIDTH, method_controls, method_select, seed_control, share_link,
                                 warn_unusable_url_value)
from dropviz.ui.image_input import image_sidebar
from dropviz.ui.panels import visualize_method_text, visualize_stages
from dropviz.viz.explain import learns_structure

st.title("Mask Explorer")

picked, x = image_sidebar(key="")

# One row that wraps on a narrow page instead of squeezing the buttons.
with st.container(horizontal=True, vertical_alignment="bottom"):
    with st.container(width=METHOD_CONTROL_WIDTH):  # "Multi-Sample Dropout" in full
        spec = method_select(key="")
    seed = seed_control(key="")
    share_link()
params = method_controls(spec, key="", wrap=True)
if learns_structure(spec):
    warn_unusable_url_value("fit", param=Param("fit", "fit", bool, False))
fit = learns_structure(spec) and st.toggle(
    "Fit to this image", key="fit", bind="query-params",
    help=f"{spec.display_name} learns its structure from activations; without data it uses a regular grid. "
         "This fits it to the image itself (a few seconds at 128 px, once per image and setting).")

visualize_stages(spec, params, x, seed, key="explorer_", image_id=picked.id, fit=fit)
st.caption(f"{picked.caption}, as a {' x '.join(map(str, x.shape))} feature map. "
           "Hover a panel and use its camera button to download it as PNG.")
visualize_method_text(spec)
