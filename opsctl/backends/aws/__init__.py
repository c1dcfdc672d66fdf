"""The AWS Batch backend: one SubmitJob per step, and nothing that has to stay running.

The run lives in the infra bucket (runs.py), Batch's own `dependsOn` carries the DAG, so any
machine with credentials and the infra outputs can watch, kill, resume or read the logs of a
run. One module a concern: submit.py (launch, resume), status.py, history.py (attempts, cost),
logs.py (logs, failure lines), backend.py (the operations, kill, list); batch.py (Batch's
request and state rules), api.py (every Batch, CloudWatch Logs and ECR call), definitions.py
(job definitions for a step's own image), prices.py (EC2 prices) and limits.py (what
`opsctl validate` asks of AWS, from the spec alone).

Nothing is imported here: `validate` reads limits.py without loading the rest.
"""
