"""Plots for the lessons and the CLI: scatter plots, reverse trajectories, GIF animations."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .backend import to_numpy
from .data.images import from_model_range


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _interactive() -> bool:
    try:
        from IPython import get_ipython
        return get_ipython() is not None
    except ImportError:
        return False


def _square(ax, lim, title=None):
    """Square axes [-lim, lim]^2 without ticks, with an optional title."""
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def scatter(points, ax=None, title=None, lim=3.0, s=1.0, color="C0", alpha=0.5):
    """Scatter a (N, 2) point cloud on square axes [-lim, lim]^2."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    pts = np.asarray(points)
    ax.scatter(pts[:, 0], pts[:, 1], s=s, c=color, alpha=alpha, linewidths=0)
    return _square(ax, lim, title)


def compare(samples, data, path=None, titles=("data", "samples"), lim=3.0):
    """Data and samples side by side; saved to ``path`` when given.  Returns the figure."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    scatter(data, axes[0], titles[0], lim=lim, color="C1")
    scatter(samples, axes[1], titles[1], lim=lim)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def trajectories(frames, ax=None, n_paths=64, lim=3.0, title=None):
    """Draw the paths of ``n_paths`` points through a list of (N, 2) frames (x_T first)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    path = np.stack([np.asarray(f)[:n_paths] for f in frames])   # (steps, n_paths, 2)
    ax.plot(path[:, :, 0], path[:, :, 1], lw=0.5, alpha=0.6, color="0.4")
    ax.scatter(path[0, :, 0], path[0, :, 1], s=4, c="C3", label="start")
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=4, c="C0", label="end")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    if title:
        ax.set_title(title)
    return ax


def save_gif(frames, path, lim=3.0, fps=12, labels=None):
    """Animate a list of (N, 2) frames into a GIF (matplotlib's Pillow writer)."""
    plt = _plt()
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax = plt.subplots(figsize=(4, 4))
    first = np.asarray(frames[0])
    dots = ax.scatter(first[:, 0], first[:, 1], s=1, alpha=0.5, linewidths=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    title = ax.set_title(labels[0] if labels else "")

    def update(i):
        dots.set_offsets(np.asarray(frames[i]))
        if labels:
            title.set_text(labels[i])
        return dots, title

    anim = FuncAnimation(fig, update, frames=len(frames), blit=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def snapshots(frames, titles=None, lim=3.0, s=1.0, color="C0", size=2.2, axes=None):
    """A row of scatter plots, one per (N, 2) frame (e.g. x_t at several t).  Returns the figure."""
    plt = _plt()
    if axes is None:
        fig, axes = plt.subplots(1, len(frames), figsize=(size * len(frames), size))
    axes = np.atleast_1d(axes)
    for i, (ax, f) in enumerate(zip(axes, frames)):
        scatter(f, ax, titles[i] if titles else None, lim=lim, s=s, color=color)
    fig = axes[0].figure
    fig.tight_layout()
    return fig


def vector_field(fn, ax=None, lim=3.0, n=21, title=None, normalise=True, color="k"):
    """Quiver plot of a vector field ``fn(points (M, 2)) -> (M, 2)`` on an n x n grid over
    [-lim, lim]^2 (e.g. a score), arrows scaled to unit length when ``normalise``.  Returns the axes."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    g = np.linspace(-lim, lim, n)
    X, Y = np.meshgrid(g, g)
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)                 # (n*n, 2)
    v = np.asarray(fn(pts), dtype=np.float64)                     # (n*n, 2)
    if normalise:
        v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)
    step = 2 * lim / (n - 1)
    if normalise:
        v = 0.8 * step * v                                        # arrows 0.8 grid cells long
    ax.quiver(pts[:, 0], pts[:, 1], v[:, 0], v[:, 1], color=color, alpha=0.7, pivot="mid",
              angles="xy", scale_units="xy", scale=1.0 if normalise else None, width=0.005)
    return _square(ax, lim, title)


def image_grid(images, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (N, C, H, W) - uint8, or floats in the model range [-1, 1] - into one uint8
    picture, ``nrow`` images per row (default ceil(sqrt(N))) in reading order, with ``pad`` white
    (255) pixels around and between them: (pad + rows (H + pad), pad + nrow (W + pad)) for C = 1,
    with a trailing axis of 3 for C = 3."""
    a = to_numpy(images)
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3, got {a.shape}")
    if a.dtype != np.uint8:
        a = from_model_range(a)
    N, C, H, W = a.shape
    nrow = nrow or int(np.ceil(np.sqrt(N)))
    # BEGIN SOLUTION
    # hint: rows = ceil(N / nrow); a grid full of 255 of shape (C, pad + rows (H + pad), pad + nrow
    # hint: (W + pad)); image i goes to row i // nrow, column i % nrow
    rows = int(np.ceil(N / nrow))
    grid = np.full((C, rows * (H + pad) + pad, nrow * (W + pad) + pad), 255, np.uint8)
    for i in range(N):
        r, c = divmod(i, nrow)
        grid[:, pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = a[i]
    # END SOLUTION
    return grid[0] if C == 1 else grid.transpose(1, 2, 0)


def save_image_grid(images, path, nrow: int | None = None, scale: int = 2) -> Path:
    """Write ``image_grid(images)`` as a PNG, each pixel repeated ``scale`` times."""
    import matplotlib.image

    g = image_grid(images, nrow)
    g = np.repeat(np.repeat(g, scale, axis=0), scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, g, cmap="gray" if g.ndim == 2 else None, vmin=0, vmax=255)
    return path
