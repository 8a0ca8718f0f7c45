"""Cosine similarity between the tokens of a prompt, and its heatmap (EPT's Figure 3).

`cosine_similarity(prompt [n, e]) -> [n, n]`; `plot_prompt_similarity(prompt, path)` writes
a PNG with matplotlib's Agg canvas (no pyplot, no display needed).
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def cosine_similarity(prompt) -> np.ndarray:
    """`[n, e]` -> `[n, n]` float64, entry (i, j) = <p_i, p_j> / (|p_i| |p_j|).

    A zero token has similarity 0 with every token (itself included) instead of NaN.
    """
    prompt = np.asarray(prompt, np.float64)
    if prompt.ndim != 2:
        raise ValueError(f"cosine_similarity expects a prompt of shape [n, e], got "
                         f"{prompt.shape}")
    norms = np.linalg.norm(prompt, axis=-1)
    safe = np.where(norms > 0, norms, 1.0)
    unit = prompt / safe[:, None]
    sim = unit @ unit.T
    sim[norms == 0, :] = 0.0
    sim[:, norms == 0] = 0.0
    return np.clip(sim, -1.0, 1.0)


def plot_prompt_similarity(prompt, path: str, title: Optional[str] = None,
                           annotate: Optional[bool] = None) -> str:
    """Writes the cosine-similarity heatmap of `prompt` `[n, e]` to `path` (PNG); returns
    `path`. Colour scale fixed to [-1, 1]; values are printed in the cells when
    `annotate` (default: n <= 20)."""
    # An Agg canvas on a bare Figure: no pyplot, no global backend switch, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sim = cosine_similarity(prompt)
    n = sim.shape[0]
    if annotate is None:
        annotate = n <= 20
    size = min(3.0 + 0.35 * n, 14.0)
    fig = Figure(figsize=(size + 1.2, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(sim, cmap="coolwarm", vmin=-1.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    step = max(1, n // 20)
    ticks = np.arange(0, n, step)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([str(i + 1) for i in ticks])
    ax.set_yticklabels([str(i + 1) for i in ticks])
    ax.set_xlabel("prompt token")
    ax.set_ylabel("prompt token")
    ax.set_title(title or f"prompt token cosine similarity (n={n})")
    if annotate:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black")
    fig.tight_layout()
    from ..fileio import save_figure

    save_figure(fig, path, format="png", dpi=100)  # local or remote (gs://)
    return path
