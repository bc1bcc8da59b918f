"""Real-time metrics: store a measurement, then aggregate the last 24 hours."""

import asyncio
import sys
import time

from ruv_swarm_persistence import MetricModel, Storage, init_storage


async def performance_monitoring(storage: Storage) -> None:
    # Store performance metrics
    cpu_metric = MetricModel.new(
        "cpu_usage", 85.5, "percent", agent_id="agent-456", tags={"host": "worker-node-01"}
    )

    await storage.store_metric(cpu_metric)

    # Query aggregated metrics
    now = time.time()
    metrics = await storage.get_aggregated_metrics(
        "cpu_usage",
        now - 86400,  # Last 24 hours
        now,
    )

    print(f"CPU metrics over 24h: {len(metrics)}")
    for m in metrics:
        print(f"  agent {m.agent_id}: mean {m.value} {m.unit} over {m.tags['count']} samples")


async def main(url: str | None = None) -> None:
    async with init_storage(url or "swarm.db") as storage:
        await performance_monitoring(storage)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
