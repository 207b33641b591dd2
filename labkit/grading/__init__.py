"""Grading: the checks labs call, instructor release and nbval-based grading."""
