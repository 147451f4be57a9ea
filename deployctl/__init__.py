"""deployctl: from a registered MLflow model to a generated, built and smoke-tested deployment."""

__version__ = "0.1.0"
