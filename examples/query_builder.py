"""Query builder: field names checked against the model, values always bound parameters."""

import asyncio
import sys

from ruv_swarm_persistence import AgentModel, AgentStatus, QueryBuilder, init_storage


async def main(url: str | None = None) -> None:
    # Type-safe query construction
    query = (
        QueryBuilder(AgentModel)
        .where_eq("status", "active")
        .where_like("agent_type", "research%")
        .order_by("created_at", desc=True)
        .limit(50)
    )
    sql, params = query.build()
    print(f"Generated SQL: {sql}")
    print(f"Parameters: {params}")

    # The same builder runs on any backend
    async with init_storage(url or "swarm.db") as storage:
        agent = AgentModel.new("worker-002", "researcher", ["nlp"])
        agent.set_status(AgentStatus.Active)
        await storage.store_agent(agent)
        found = await storage.query(query)
        print(f"Active researchers: {len(found)}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
