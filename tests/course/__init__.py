"""Tests of the course as a whole rather than of a labkit module: the labs run through and
keep their conventions, the book's figures and references, the published site, a student's
install from it, and the benchmarks."""
