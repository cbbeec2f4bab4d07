"""Teaching text per regularizer: what it does, its formula (LaTeX for ``st.latex``) and its paper.

Shared by the Explorer, Compare and Lecture pages. A method without an entry here falls back to its
REGISTRY summary and paper, so a newly registered method still gets a (shorter) explanation.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodText:
    what: str
    formula: str  # LaTeX, no surrounding $
    paper: str
    url: str = ""


TEXTS: dict[str, MethodText] = {
    "dropout": MethodText(
        what="Every unit is dropped on its own with probability $p$; the survivors are scaled up so the "
             "expected activation is unchanged. Neighbouring pixels are strongly correlated, so the next "
             "layer can often fill a single dropped pixel back in from its neighbours.",
        formula=r"m_i \sim \mathrm{Bernoulli}(1-p), \qquad y_i = \frac{m_i\, x_i}{1-p}",
        paper="Srivastava et al., Dropout: A Simple Way to Prevent Neural Networks from Overfitting, JMLR 2014",
        url="https://jmlr.org/papers/v15/srivastava14a.html"),
    "droppath": MethodText(
        what="Drops the whole sample (in a network: a whole residual branch) with probability $p$. On one "
             "image it is all or nothing; in a ResNet it randomly shortens the depth of each example.",
        formula=r"b \sim \mathrm{Bernoulli}(1-p) \text{ per sample}, \qquad y = \frac{b\, x}{1-p}",
        paper="Larsson et al., FractalNet, ICLR 2017; Huang et al., Deep Networks with Stochastic Depth, ECCV 2016",
        url="https://arxiv.org/abs/1603.09382"),
    "dropblock": MethodText(
        what="Drops contiguous $k \\times k$ squares, so a whole region of a feature map (an eye, a wheel) "
             "disappears and the network must use other evidence. Seeds are sampled at valid centres with rate "
             "$\\gamma$ and grown into blocks; the output is rescaled by the kept fraction.",
        formula=r"\gamma \approx \frac{p}{k^2}\,\frac{HW}{(H-k+1)(W-k+1)}, \quad "
                r"M = 1 - \mathrm{maxpool}_{k}(\mathrm{seeds}), \quad y = x \odot M \,\frac{|M|}{\sum M}",
        paper="Ghiasi, Lin, Le, DropBlock: A regularization method for convolutional networks, NeurIPS 2018",
        url="https://arxiv.org/abs/1810.12890"),
    "probdropblock": MethodText(
        what="DropBlock whose seeds prefer salient places: a block's seed probability grows with $|x|$ at its "
             "centre, so the strongest evidence is the most likely to be removed.",
        formula=r"\gamma_i = \gamma\, \frac{|x_i|}{\operatorname{mean}_j |x_j|} \;(\text{clipped to } 1)",
        paper="Zhao, Dada, Gao, Mullins, Revisiting Structured Dropout, ACML 2023 (PMLR 222)",
        url="https://arxiv.org/abs/2210.02570"),
    "disout": MethodText(
        what="Instead of zeroing the selected blocks, Disout replaces them with a random distortion whose "
             "size follows the feature map's own spread (strength $\\alpha$). The distortion is chosen to "
             "lower the empirical Rademacher complexity of the layer, a bound on the generalisation gap.",
        formula=r"y = x \odot M + (1 - M) \odot \varepsilon, \qquad "
                r"\varepsilon \propto \alpha\, \sigma(x)\, \xi,\ \xi \text{ random}",
        paper="Tang et al., Beyond Dropout: Feature Map Distortion to Regularize Deep Neural Networks, AAAI 2020",
        url="https://arxiv.org/abs/2002.11022"),
    "dropcluster": MethodText(
        what="Groups the units of each channel into clusters of similar activation (k-means), then drops "
             "whole clusters. The dropped regions follow the content (an object, a texture) instead of "
             "fixed squares.",
        formula=r"c(i) = \arg\min_j \| x_i - \mu_j \|, \quad "
                r"M_i = 1 - d_{c(i)},\ d_j \sim \mathrm{Bernoulli}(p), \quad y = x \odot M \,\frac{|M|}{\sum M}",
        paper="Chen, Gautier, Aydore, DropCluster: A structured dropout for convolutional networks, arXiv 2020",
        url="https://arxiv.org/abs/2002.02997"),
    "multisample": MethodText(
        what="Draws several dropout masks for the same input and averages what follows (in the paper: the "
             "losses of the samples), which gives the gradient of many dropout draws for the price of one "
             "forward pass of the body of the network.",
        formula=r"y = \frac{1}{S}\sum_{s=1}^{S} \frac{m^{(s)} \odot x}{1-p}, \quad m^{(s)}_i \sim \mathrm{Bernoulli}(1-p)",
        paper="Inoue, Multi-Sample Dropout for Accelerated Training and Better Generalization, 2019",
        url="https://arxiv.org/abs/1905.09788"),
}


def method_text(spec) -> MethodText:
    """The teaching text of a REGISTRY spec, or one built from its summary and paper."""
    return TEXTS.get(spec.name) or MethodText(what=spec.summary, formula="", paper=spec.paper)
