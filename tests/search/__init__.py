"""Tests of labkit.search: AMC and NetAdapt."""
