"""Deterministic supervisors (witness, dogs): loops with a `tick()` that tests can step."""
