"""Names of the implementations the suite compares (no cnnext import, so the report runs anywhere)."""

from __future__ import annotations

CONV_IMPLS: tuple[str, ...] = ("torch", "cnnext-direct", "cnnext-im2col", "cnnext-auto")
POOL_IMPLS: tuple[str, ...] = ("torch", "cnnext")
FUSED = "+fuse"
"""Suffix of a training-step implementation whose converted model also went through cnnext.fuse."""
TRAIN_IMPLS: tuple[str, ...] = (*CONV_IMPLS, f"cnnext-auto{FUSED}")
CHANNELS_LAST = "+channels_last"
"""Suffix of a training-step implementation whose model and batch are in channels_last memory format."""
ARCH_TRAIN_IMPLS: tuple[str, ...] = ("torch", "cnnext-auto", f"torch{CHANNELS_LAST}", f"cnnext-auto{CHANNELS_LAST}")
"""The standard architectures' training steps: torch vs convert(), NCHW and channels_last."""


def algo_of(impl: str) -> str:
    """The cnnext ``algo`` argument of an implementation name (``"cnnext-im2col"`` → ``"im2col"``,
    ``"cnnext-auto+fuse"`` → ``"auto"``, ``"cnnext-auto+channels_last"`` → ``"auto"``)."""
    return impl.removeprefix("cnnext-").removesuffix(FUSED).removesuffix(CHANNELS_LAST)
