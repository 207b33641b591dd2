"""What several test modules share: the repository's folders, tiny models and a tiny lab,
made-up and dishonest submissions, the Docker-like container, and correct solutions
written in other styles than labkit's."""
