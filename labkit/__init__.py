"""labkit: the library behind the pruning workbook (MIT 6.5940, lectures 3-4).

Every lab notebook calls into this package; a reader finds the code for a lecture
slide by the module named after it (see ``DESIGN`` in the README).
"""

import torch

__version__ = "0.1.0"


def device() -> torch.device:
    """The device the labs run on: CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
