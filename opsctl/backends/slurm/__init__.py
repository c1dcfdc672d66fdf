"""The Slurm backend: a pipeline on the cluster scientists already have, with no driver left running.

Each step is one `sbatch --array` (or a plain job for one child), dependencies are Slurm's, a
child's retries run in its own allocation, and the run's directory on the shared filesystem
holds everything `status`, `logs` and `report` read (docs/slurm.md). Import
`opsctl.backends.slurm.backend` for the backend; this package imports nothing.
"""
