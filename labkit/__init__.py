"""labkit: the library behind the pruning workbook (MIT 6.5940, lectures 3-4).

Every lab notebook calls into this package; a reader finds the code for a lecture
slide by the module named after it. The modules form layers, lowest first; a module
imports only from its own layer or a lower one (``tests/test_layers.py`` says so, and
finds import cycles):

1. ``validation``: the argument checks every function starts with.
2. ``data``, ``models``, ``measure``, ``training``, ``files``: the data sets, the
   networks, what a network costs (size, MACs, latency), how it learns (training,
   finetuning, seeds and thread counts, language models), and writing files atomically.
3. ``zoo``: pretrained networks, trained once and cached.
4. ``pruning``: the lecture's core, masks, importance, channel removal, schedules.
5. ``search`` and ``hardware``: AMC and NetAdapt; EIE, 2:4 sparsity, sparse convolution.
6. ``viz``: figures, tables and widgets, and the views of single labs; it draws what
   the layers below compute and trains nothing.
7. ``grading``: releasing, running, checking and grading the labs.
8. ``cli``: the ``labkit`` command.

The README's "How the library is layered" says why.
"""

import torch

__version__ = "0.1.0"


def device() -> torch.device:
    """The device the labs run on: CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
