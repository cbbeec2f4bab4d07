"""Teaching text per regularizer: what it does, its formula (LaTeX for ``st.latex``) and its paper.

Shared by the Explorer, Compare and Lecture pages. A method without an entry here falls back to its
REGISTRY summary and paper, so a newly registered method still gets a (shorter) explanation.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodText:
    what: str
    formula: str  # LaTeX, no surrounding $; a part a line (gathered), so it fits beside the sidebar at 800 px
    paper: str
    url: str = ""


TEXTS: dict[str, MethodText] = {
    "dropout": MethodText(
        what="Every unit is dropped on its own with probability $p$; the survivors are scaled up so the "
             "expected activation is unchanged. Neighbouring pixels are strongly correlated, so the next "
             "layer can often fill a single dropped pixel back in from its neighbours.",
        formula=r"\begin{gathered} m_i \sim \mathrm{Bernoulli}(1-p) \\ y_i = \frac{m_i\, x_i}{1-p} \end{gathered}",
        paper="Srivastava et al., Dropout: A Simple Way to Prevent Neural Networks from Overfitting, JMLR 2014",
        url="https://jmlr.org/papers/v15/srivastava14a.html"),
    "droppath": MethodText(
        what="Drops the whole sample (in a network: a whole residual branch) with probability $p$. On one "
             "image it is all or nothing; in a ResNet it randomly shortens the depth of each example.",
        formula=r"\begin{gathered} b \sim \mathrm{Bernoulli}(1-p) \text{ per sample} \\ y = \frac{b\, x}{1-p} "
                r"\end{gathered}",
        paper="Larsson et al., FractalNet, ICLR 2017; Huang et al., Deep Networks with Stochastic Depth, ECCV 2016",
        url="https://arxiv.org/abs/1603.09382"),
    "dropblock": MethodText(
        what="Drops contiguous $k \\times k$ squares, so a whole region of a feature map (an eye, a wheel) "
             "disappears and the network must use other evidence. Seeds are drawn at valid centres with rate "
             "$\\gamma$ and grown into blocks; the output is rescaled by the kept fraction. The paper's "
             "$\\gamma$ counts overlapping blocks twice and under-drops; dropviz solves for the $\\gamma$ "
             "whose expected dropped fraction is exactly $p$ (the paper's formula is its first-order term).",
        formula=r"\begin{gathered} \gamma \approx \frac{p}{k^2}\,\frac{HW}{(H-k+1)(W-k+1)} \\ "
                r"M = 1 - \mathrm{maxpool}_{k}(\mathrm{seeds}) \\ y = x \odot M \,\frac{|M|}{\sum M} \end{gathered}",
        paper="Ghiasi, Lin, Le, DropBlock: A regularization method for convolutional networks, NeurIPS 2018",
        url="https://arxiv.org/abs/1810.12890"),
    "probdropblock": MethodText(
        what="DropBlock whose seeds prefer salient places: a block's seed probability grows with $|x|$ at its "
             "centre, so the strongest evidence is the most likely to be removed.",
        formula=r"\gamma_i = \gamma\, \frac{|x_i|}{\operatorname{mean}_j |x_j|} \;(\text{clipped to } 1)",
        paper="Zhao, Dada, Gao, Mullins, Revisiting Structured Dropout, ACML 2023 (PMLR 222)",
        url="https://arxiv.org/abs/2210.02570"),
    "disout": MethodText(
        what="Uses DropBlock's mask, but instead of zeroing the selected blocks it replaces them with random "
             "noise whose size follows the feature map's spread, strength $\\alpha$ (and, inside a network, the "
             "weights of the next conv). Distorting rather than erasing lowers the empirical Rademacher "
             "complexity of the layer, a bound on the generalisation gap.",
        formula=r"\begin{gathered} y = \frac{x \odot M + (1 - M) \odot \varepsilon}{\sum M / |M|} \\ "
                r"\varepsilon = \alpha\, w\, \sigma(x)\, \xi,\ \xi \sim \mathcal{N}(0, 1) \end{gathered}",
        paper="Tang et al., Beyond Dropout: Feature Map Distortion to Regularize Deep Neural Networks, AAAI 2020",
        url="https://arxiv.org/abs/2002.11022"),
    "dropcluster": MethodText(
        what="Groups the positions of each channel into spatially connected clusters whose activations vary "
             "together over recent samples (Ward agglomeration), then drops whole clusters. The dropped regions "
             "follow the content instead of fixed squares. Until it has seen data, the clusters are a grid.",
        formula=r"\begin{gathered} d_j \sim \mathrm{Bernoulli}(p) \text{ per cluster } j \\ M_i = 1 - d_{c(i)} \\ "
                r"y = x \odot M \,\frac{|M|}{\sum M} \end{gathered}",
        paper="Chen, Mordohai, Aydore, DropCluster: A structured dropout for convolutional networks, arXiv 2020",
        url="https://arxiv.org/abs/2002.02997"),
    "multisample": MethodText(
        what="Draws several dropout masks for the same input and averages what follows (in the paper: the "
             "losses of the samples), which gives the gradient of many dropout draws for the price of one "
             "forward pass of the body of the network.",
        formula=r"\begin{gathered} y = \frac{1}{S}\sum_{s=1}^{S} \frac{m^{(s)} \odot x}{1-p} \\ "
                r"m^{(s)}_i \sim \mathrm{Bernoulli}(1-p) \end{gathered}",
        paper="Inoue, Multi-Sample Dropout for Accelerated Training and Better Generalization, 2019",
        url="https://arxiv.org/abs/1905.09788"),
}


def method_text(spec) -> MethodText:
    """The teaching text of a REGISTRY spec, or one built from its summary and paper."""
    return TEXTS.get(spec.name) or MethodText(what=spec.summary, formula="", paper=spec.paper)
