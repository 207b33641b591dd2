"""Hardware support for sparsity: EIE, 2:4 structured sparsity, sparse 3-D convolution."""

import torch


def check_codes(value: torch.Tensor, name: str, ndim: int, levels: int) -> None:
    """``value`` must be an integer tensor of ``ndim`` dimensions with entries in
    ``[0, levels)`` (a codebook index, a 2-bit position, ...); else a clear error."""
    if not isinstance(value, torch.Tensor) or value.is_floating_point() \
            or value.dtype == torch.bool:
        found = value.dtype if isinstance(value, torch.Tensor) else type(value)
        raise TypeError(f"{name} must be an integer torch.Tensor, got {found}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(value.shape)}")
    if value.numel() and not 0 <= value.min() <= value.max() < levels:
        raise ValueError(
            f"{name} must lie in [0, {levels - 1}], got values in "
            f"[{int(value.min())}, {int(value.max())}]"
        )
