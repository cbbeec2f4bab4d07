"""Home: what dropviz is, the methods it covers, and where each page is."""
from __future__ import annotations

import streamlit as st

from app import available_pages
from dropviz.regularizers import REGISTRY

# Methods dropviz covers, for those not in REGISTRY yet: (display name, one line, paper).
# Registry entries win, so this table shows what the library really has as entries are added.
PLANNED_METHODS = {
    "dropout": ("Dropout", "Drops single units independently.",
                "Srivastava et al., JMLR 2014"),
    "droppath": ("DropPath", "Drops a whole residual branch per sample (stochastic depth).",
                 "Larsson et al., FractalNet, ICLR 2017; Huang et al., Stochastic Depth, ECCV 2016"),
    "dropblock": ("DropBlock", "Drops contiguous square blocks of a feature map, 2D or 3D, with a linear schedule.",
                  "Ghiasi, Lin, Le, DropBlock, NeurIPS 2018"),
    "disout": ("Disout", "Distorts feature-map blocks instead of zeroing them.",
               "Tang et al., Beyond Dropout: Feature Map Distortion, AAAI 2020"),
    "dropcluster": ("DropCluster", "Drops clusters of correlated features found in the data.",
                    "Chen, Gautier, Aydore, DropCluster, 2020"),
    "probdropblock": ("ProbDropBlock", "DropBlock whose block centres follow feature salience.",
                      "Zhao et al., Revisiting Structured Dropout, ACML 2023"),
    "multisample": ("Multi-Sample Dropout", "Averages the loss over several dropout masks per step.",
                    "Inoue, Multi-Sample Dropout, 2019"),
}


def method_rows() -> list[tuple[str, str, str, bool]]:
    """(name, summary, paper, in the library) for every method: registry entries first, then planned ones."""
    rows = [(spec.display_name, spec.summary, spec.paper, True) for spec in REGISTRY.values()]
    rows += [(*PLANNED_METHODS[name], False) for name in PLANNED_METHODS if name not in REGISTRY]
    return rows


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


st.title("dropviz")
st.subheader("A structured-dropout lab for PyTorch")
st.markdown(
    "Dropout zeroes single activations at random. In convolutional networks neighbouring activations carry "
    "almost the same information, so the network routes around the holes. **Structured** dropout drops "
    "whole regions, channels or branches instead. dropviz shows what each method does to real images and "
    "feature maps, and how it changes training, using the same code a PyTorch model would run."
)

st.header("Where to go")
other_pages = available_pages()[1:]
for path, title, icon, purpose in other_pages:
    # The link over its text, each at the page's width: a column a quarter of a narrow page cut it to "Mask Ex".
    st.page_link(path, label=title, icon=icon)
    st.markdown(purpose)
if other_pages:
    st.caption("The menu on the left lists every page. On a projector, collapse it with "
               "the arrow at its top to give the figures the whole width.")
else:
    st.info("No other pages are installed yet.")

st.header("Methods")
rows = method_rows()
# "In the library" only while some method is not: a fourth column of "yes" overflowed a narrow page.
planned = not all(in_library for *_, in_library in rows)
table = ["| Method | What it drops | Paper |" + " In the library |" * planned,
         "| --- | --- | --- |" + " --- |" * planned]
table += [f"| **{markdown_cell(name)}** | {markdown_cell(summary)} | {markdown_cell(paper)} |"
          + f" {'yes' if in_library else 'not yet'} |" * planned
          for name, summary, paper, in_library in rows]
st.markdown("\n".join(table))
