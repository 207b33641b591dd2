"""Tests of labkit.grading.checks, in three groups.

- The machinery: ``test_core`` (cases, comparison, feedback, practice and grading mode).
- Each lab's checks in practice mode and against the typical mistakes of that lab, which
  the feedback must name: ``test_labs_00_03``, ``test_residual`` (lab 03b),
  ``test_labs_04_07`` (with the labs' own solutions over every case, and the numbers the
  labs' tables show) and ``test_hardware`` (labs 07 and 07b).
- Correct solutions in other styles than the reference, and more typical mistakes, graded
  the referee's way over many seeds: ``test_alternative_solutions`` (labs 00-03b, 07, 07b, 08)
  and ``test_alternative_solutions_training`` (labs 04-06).

The labs' own solutions are always taken from the instructor notebooks
(:func:`tests.support.lab_submissions.lab_solutions`), never copied here.
"""
