"""Reliability drills: fault storms, crashes, concurrent runs, bad input, fatal errors, secrets.

`python -m tests.reliability.drills` (`make reliability`) runs them all and prints the figures;
`tests/reliability/test_reliability_fast.py` runs a fast subset under pytest.
"""
