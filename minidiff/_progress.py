"""The samplers' optional progress bar (tqdm), one helper for every sampler family."""
from __future__ import annotations


def progress_bar(steps, progress: bool, desc: str, total=None):
    """``steps`` wrapped in a tqdm bar when ``progress`` is true, else ``steps`` unchanged."""
    if not progress:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc=desc, total=total, leave=False)
