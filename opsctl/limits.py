"""The names and numbers a run may hold: AWS Batch's limits, enforced for every backend so that a
spec that runs locally also submits, and checked again wherever a recorded value is read back
(the spec, the run manifest, the requests to Batch)."""

import re

# A pipeline's name starts its run ids, and so every SubmitJob jobName, which must start with a
# letter or digit (AWS Batch); it also keeps a run id from reading as an option on a command line.
PIPELINE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
# A step's name is a folder of the run's state and logs, and part of every child's job name.
STEP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_ARRAY_SIZE = 10_000  # array jobs hold 2..10,000 children
MAX_DEPENDS_ON = 20  # SubmitJob's dependsOn takes at most 20 entries
MAX_RETRIES = 9  # retryStrategy.attempts is 1..10, and attempts = retries + 1
MIN_TIMEOUT = 60  # Batch rejects attemptDurationSeconds below 60
MAX_GPUS = 8  # the most of any instance type the GPU compute environment takes (p4d, p5, g6e.48xlarge)
# timeout, vcpus and memory travel as the Batch API's 32-bit integers (botocore's batch model:
# JobTimeout.attemptDurationSeconds, ContainerOverrides.vcpus and .memory are `integer`), so a
# larger one cannot even be read by the service.
MAX_INTEGER = 2**31 - 1
