"""churn-worker: churn-risk scoring and retention triggers over Kafka event streams."""
