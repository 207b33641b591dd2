"""Hardware support for sparsity: EIE, 2:4 structured sparsity, sparse 3-D convolution."""
