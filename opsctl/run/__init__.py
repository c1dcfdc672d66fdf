"""A run's life, whatever the backend: its id, its manifest, its states and the resume rule,
the work packs a launch and a resume write, and the story of each failed child.

ids.py (run ids, opsctl's home), manifest.py (the record of a launched run and its shape),
states.py (job states and how markers settle them), plan.py (what a launch or resume writes
before any child starts), failures.py (each failed child's command, stderr and log). The
backends (opsctl/backends/) call these; nothing here knows an engine.
"""
