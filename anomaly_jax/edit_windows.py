"""How each edit of `anomaly_jax.edits` applies to a window of its image: the apply table,
what the edit reads beyond its window, the parameter a loop may fix per group, and how far
from its region's centre it reaches. The whole image is the window at origin 0
(`edit_sampling`'s vmap schedule); `edit_loop` passes smaller ones.

What a researcher may change: with a new edit, its entries here (and its sampler in
`edit_sampling`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from anomaly_jax.config import EDIT_KINDS
from anomaly_jax.edits import STRETCH_CLIP, erase, smudge, smudge_radius, splice, stretch

Array = jax.Array

# Each edit on a window of its image: (window uint8[h, w, 3], source, mask bool[h, w],
# params, origin int32[2], source_origin int32[2], (H, W)) -> uint8[h, w, 3].
# The window's top-left pixel is `origin` in an image of static shape (H, W); `source` is what
# the edit reads beyond the window (EDIT_SOURCE): for copy_move / splice the window of their
# own image / the donor at source_origin, for erase its whole image (the fill reads every
# pixel; only the window of the result is computed and returned).
# The whole image is the window at origin 0 (`_edit_branch`); `edit_loop` passes smaller ones.
EDIT_APPLY = {
    "smudge": lambda win, src, mask, p, o, so, shape: smudge(win, mask, p["sigma"],
                                                             smudge_radius(*shape)),
    "erase": lambda win, src, mask, p, o, so, shape: erase(src, p["mask"],
                                                           window=(o, win.shape[:2])),
    "stretch": lambda win, src, mask, p, o, so, shape: stretch(
        win, mask, p["center"], p["factor"], p["axis"], origin=o, full_shape=shape),
    "copy_move": lambda win, src, mask, p, o, so, shape: splice(win, src, mask,
                                                                o + p["offset"] - so),
    "splice": lambda win, src, mask, p, o, so, shape: splice(win, src, mask,
                                                             o + p["offset"] - so),
}
# A parameter with few values that a loop may fix per group, so each image computes only its
# own value's branch (stretch resamples both axes under vmap and selects one).
EDIT_STATIC = {"stretch": ("axis", (0, 1))}
# What an edit reads beyond its window (the `source` above): nothing, a window of its own
# image or of the donor, or its whole image.
EDIT_SOURCE = {"smudge": None, "erase": "whole", "stretch": None, "copy_move": "image",
               "splice": "donor"}


def edit_extent(kind: str, p: dict[str, Array], height: int, width: int) -> Array:
    """int32[]: e such that the edit of the region of params p changes only pixels within e of
    its centre along each axis (rows and columns [c - e, c + e)) and reads, besides its source
    (EDIT_SOURCE), only pixels there too: a window holding those gives the whole image's
    result."""
    r = jnp.asarray(p["half_size"], jnp.int32)
    if kind in ("copy_move", "splice", "erase"):  # the region; reads: their source
        return r
    if kind == "smudge":  # the blur reads its radius beyond the region
        return r + smudge_radius(height, width)
    if kind == "stretch":  # reads up to r / factor from the centre (> r when shrinking), +1 px
        factor = jnp.minimum(jnp.clip(p["factor"], *STRETCH_CLIP), 1.0)
        return jnp.maximum(r, jnp.ceil(r.astype(jnp.float32) / factor).astype(jnp.int32) + 2)
    raise ValueError(f"edits: {kind!r} is not one of the edits {EDIT_KINDS}")


assert tuple(EDIT_APPLY) == tuple(EDIT_SOURCE) == EDIT_KINDS
