"""What the operator side (opsctl/) and the container side (worker/) both rely on, and nothing else.

The store (a local directory or S3, with atomic create-if-absent) and the AWS client settings,
the errors and their exit codes, logging set-up, reading user files, the list-file format and
the one definition of a line, the split formulas, the marker and claim key layout, and the
worker environment's variable names. This package imports nothing else of the project;
opsctl/ and worker/ import it and never each other (tests/test_layers.py).
"""
