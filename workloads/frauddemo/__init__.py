"""FraudDemo: cross-store return-fraud detection on open-source active-active Redis."""

__version__ = "0.1.0"
