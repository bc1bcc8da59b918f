"""Event sourcing: append events, then read the last hour back."""

import asyncio
import sys
import time

from ruv_swarm_persistence import EventModel, Storage, init_storage


async def track_agent_events(storage: Storage) -> None:
    event = EventModel.new(
        "agent_started",
        {"startup_time": "2024-01-01T10:00:00Z", "capabilities": ["nlp", "analysis"]},
        agent_id="agent-123",
    )

    await storage.store_event(event)

    # Query recent events
    recent_events = await storage.get_events_since(time.time() - 3600)  # Last hour

    print(f"Recent events: {len(recent_events)}")


async def main(url: str | None = None) -> None:
    async with init_storage(url or "swarm.db") as storage:
        await track_agent_events(storage)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
