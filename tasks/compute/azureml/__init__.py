"""The Azure ML backend, in parts: :mod:`~.backend` (submit, poll, retry, cancel),
:mod:`~.spec` (the job, environment and cluster, built offline), :mod:`~.folders` (job folders
in the data account), :mod:`~.logs` (logs and failure meaning), :mod:`~.redaction`,
:mod:`~.client` (Azure clients), :mod:`~.smoke` (the
first job to run against a new deployment)."""
