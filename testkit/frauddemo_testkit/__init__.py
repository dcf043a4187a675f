"""FraudDemo's test kit: the Kubernetes API emulator (fast operator unit tests), polling helpers and
pytest fixtures. Never shipped in the wheel; the tests put testkit/ on their path."""
