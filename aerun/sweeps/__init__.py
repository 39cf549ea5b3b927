"""Sweeps (`aerun train -m ...`): the job directories read back (`jobs`), the summary table
(`summary`), the callback that keeps it current (`callback`), resumable sweeps (`resume`)."""
