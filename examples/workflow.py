"""Record a small workflow's events into a SQLite file, then print its summary and timeline.

Run: .venv/bin/python examples/workflow.py [var/example.db]
"""

import asyncio
import sys

from eventlog import EventLog


async def main(path: str) -> None:
    async with EventLog.open(f"sqlite:///{path}") as log:
        run = {"execution_id": 1001, "worker_id": "example"}  # rerunning it appends nothing new
        steps = [("start", "step.enter"), ("fetch", "call.done"), ("fetch", "step.exit")]
        for n, (step, event_type) in enumerate(steps, 1):
            await log.append({**run, "event_id": n, "step": step, "event_type": event_type})
        await log.append({**run, "event_id": 9, "step": "end", "event_type": "playbook.completed"})
        summary = await log.execution(1001)
        print(f"execution {summary.execution_id}: {summary.status}, {summary.event_count} events")
        async for event in log.events(1001):
            print(
                f"  {event.seq:>4}  {event.created_at:%H:%M:%S}  {event.step:<6} {event.event_type}"
            )


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "var/example.db"))
