"""Kopf operator for the FraudDemo custom resource."""
