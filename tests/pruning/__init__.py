"""Tests of labkit.pruning: one module per pruning concept."""
