"""Tests of labkit.grading.checks, in three groups.

- The machinery: ``test_core`` (cases, comparison, feedback, practice and grading mode).
- Each lab's checks on the lab's own solutions, read from the instructor notebooks, and
  on typical mistakes: ``test_labs_00_03``, ``test_residual`` (lab 03b),
  ``test_labs_04_07`` and ``test_hardware`` (lab 07).
- Correct solutions in other styles than the reference, and typical mistakes, graded the
  referee's way over many seeds: ``test_alternative_solutions`` (labs 00-03b, 07, 08)
  and ``test_alternative_solutions_training`` (labs 04-06).
"""
