"""Names of the implementations the suite compares (no cnnext import, so the report runs anywhere)."""

from __future__ import annotations

CONV_IMPLS: tuple[str, ...] = ("torch", "cnnext-direct", "cnnext-im2col", "cnnext-auto")
POOL_IMPLS: tuple[str, ...] = ("torch", "cnnext")
FUSED = "+fuse"
"""Suffix of a training-step implementation whose converted model also went through cnnext.fuse."""
TRAIN_IMPLS: tuple[str, ...] = (*CONV_IMPLS, f"cnnext-auto{FUSED}")


def algo_of(impl: str) -> str:
    """The cnnext ``algo`` argument of an implementation name (``"cnnext-im2col"`` → ``"im2col"``,
    ``"cnnext-auto+fuse"`` → ``"auto"``)."""
    return impl.removeprefix("cnnext-").removesuffix(FUSED)
