"""The task part of the conformance suite, run against every backend."""

from ruv_swarm_persistence.testing.task_lifecycle import *  # noqa: F403
from ruv_swarm_persistence.testing.task_properties import *  # noqa: F403
from ruv_swarm_persistence.testing.tasks import *  # noqa: F403
