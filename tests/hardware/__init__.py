"""Tests of labkit.hardware: EIE, 2:4 sparsity and sparse convolution."""
