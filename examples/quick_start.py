"""Quick start: open the default storage, store an agent, read it back."""

import asyncio
import sys

from ruv_swarm_persistence import AgentModel, init_storage


async def main(url: str | None = None) -> None:
    # Initialize storage (SQLite file by default; any URL init_storage accepts)
    async with init_storage(url or "swarm.db") as storage:
        # Create and store an agent
        agent = AgentModel.new("worker-001", "researcher", ["analysis", "data-processing"])
        await storage.store_agent(agent)

        # Retrieve agent
        retrieved = await storage.get_agent(agent.id)
        print(f"Agent retrieved: {retrieved}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
