"""What several test modules share, one module a subject:

- ``paths``: the repository's folders;
- ``tiny_models`` and ``finetuning``: small models and data that train in seconds;
- ``tinylab``: a tiny lab to grade; ``lab_submissions``: made-up submissions of lab 00
  and the labs' own solutions, run from their notebooks; ``tricks``: dishonest
  submissions;
- ``containerlib``: the Docker-like container the grading tests run in;
- ``hardware_solutions``: the exercises of labs 07 and 07b solved in other styles.
"""
