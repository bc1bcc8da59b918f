"""The batch verbs (``claim_next_tasks``, ``complete_tasks``), run against every backend."""

from ruv_swarm_persistence.testing.batch_tasks import *  # noqa: F403
