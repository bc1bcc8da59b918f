"""Transaction support: two tasks stored atomically, exactly as the crate's README wrote it.

The calls go to ``storage`` itself, not to ``tx``: they join the transaction because they are
made from the task that began it.
"""

import asyncio
import sys

from ruv_swarm_persistence import TaskModel, TaskPriority, init_storage


async def atomic_task_processing(url: str | None = None) -> None:
    async with init_storage(url or "swarm.db") as storage:
        # Begin transaction
        tx = await storage.begin_transaction()

        # Multiple operations in single transaction
        task1 = TaskModel.new("analysis", {"dataset": "sales_data.csv"}, TaskPriority.High)
        task2 = TaskModel.new("report", {"template": "quarterly"}, TaskPriority.Medium)

        # Both tasks stored atomically
        await storage.store_task(task1)
        await storage.store_task(task2)

        # Commit all changes
        await tx.commit()
        print(f"Stored {task1.id} and {task2.id} in one transaction")


if __name__ == "__main__":
    asyncio.run(atomic_task_processing(sys.argv[1] if len(sys.argv) > 1 else None))
