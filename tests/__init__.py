"""The tests of the workbook, laid out like labkit: a test module per labkit module, in a
folder per subpackage (``pruning/``, ``search/``, ``hardware/``, ``viz/``, ``grading/``),
and the top-level modules' tests here, with the tests of labkit as a whole (its layers, its
properties over random input, its answers to bad input). ``course/`` tests what lies
outside labkit: the labs, the book, the student's install and the benchmarks.
``support/`` holds what several test modules share; ``conftest.py`` the shared fixtures.
"""
