"""propensity: cross-platform purchase, click and churn propensity on Spark, Delta Lake and MLflow."""

__version__ = "0.1.0"
