"""labkit side by side with what a user would pick instead, measured in one run.

Six comparisons, one module each, run by ``python -m benchmarks.run`` (``make bench``):

1. :mod:`benchmarks.masks`: fine-grained and channel masks against
   :mod:`torch.nn.utils.prune` (identical masks, time to prune, inference, checkpoints);
2. :mod:`benchmarks.channels`: physical channel removal against Torch-Pruning
   (parameters, MACs, latency, outputs when both keep the same channels);
3. :mod:`benchmarks.macs`: MAC counts against ``FlopCounterMode``, the textbook formula
   and Torch-Pruning's counter;
4. :mod:`benchmarks.speedup`: measured latency speed-up of channel pruning against its
   MAC reduction, the physical limit;
5. :mod:`benchmarks.sparse_kernels`: ``torch.sparse`` CSR matmul and labkit's sparse 3-D
   convolution against their dense counterparts;
6. :mod:`benchmarks.labs`: the execution time of every lab notebook.

Every speed figure is a ratio of two timings taken in the same run on the same machine;
timings come from :mod:`torch.utils.benchmark` with a fixed thread count and report the
median and the inter-quartile range. Results go to ``benchmarks/results/<name>.json``
and the markdown tables to ``benchmarks/results/results.md``.
"""
