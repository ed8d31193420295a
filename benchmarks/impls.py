"""Names of the implementations the suite compares (no cnnext import, so the report runs anywhere)."""

from __future__ import annotations

CONV_IMPLS: tuple[str, ...] = ("torch", "cnnext-direct", "cnnext-im2col", "cnnext-auto")
POOL_IMPLS: tuple[str, ...] = ("torch", "cnnext")


def algo_of(impl: str) -> str:
    """The cnnext ``algo`` argument of a conv implementation name (``"cnnext-im2col"`` → ``"im2col"``)."""
    return impl.removeprefix("cnnext-")
