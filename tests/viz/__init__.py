"""Tests of labkit.viz: the plots, controls and tables the labs use."""
