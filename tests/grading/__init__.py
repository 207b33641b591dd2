"""Tests of labkit.grading: release, the grading pipeline in each isolation mode, Gradescope,
shards and similarity; the checks are in ``checks/``."""
