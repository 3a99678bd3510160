"""Load generator for ``bench/queues.py``, run as its own process (so it does not share the node's
interpreter): ``python bench/_queues_client.py MODE --base URL --token T --queue ID [...]``.

Modes: ``push1`` (one message per request), ``push100`` (batches of 100), ``pullack`` (pull up to
100, then ack them all in one call). ``--concurrency`` clients loop for ``--duration`` seconds over
one keep-alive connection each. Prints one JSON line: messages, seconds, messages/s, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("push1", "push100", "pullack"))
    ap.add_argument("--base", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--account", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--duration", type=float, default=8.0)
    args = ap.parse_args()
    url = f"{args.base}/client/v4/accounts/{args.account}/queues/{args.queue}/messages"
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    single = json.dumps({"body": "x" * 100, "content_type": "text"})
    batch = json.dumps({"messages": [{"body": "x" * 100, "content_type": "text"}] * 100})
    done = 0
    errors = 0
    stop = time.monotonic() + args.duration

    async def worker() -> None:
        nonlocal done, errors
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as s:
            while time.monotonic() < stop:
                if args.mode == "push1":
                    async with s.post(url, data=single) as r:
                        await r.read()
                        ok = r.status == 200
                    done += ok
                elif args.mode == "push100":
                    async with s.post(url + "/batch", data=batch) as r:
                        await r.read()
                        ok = r.status == 200
                    done += 100 * ok
                else:
                    async with s.post(url + "/pull", data='{"batch_size": 100}') as r:
                        body = await r.json()
                        ok = r.status == 200
                    leases = [
                        {"lease_id": m["lease_id"]} for m in (body.get("result") or {}).get("messages", [])
                    ]
                    if not leases:
                        await asyncio.sleep(0.01)
                        continue
                    async with s.post(url + "/ack", data=json.dumps({"acks": leases})) as r:
                        await r.read()
                        ok = ok and r.status == 200
                    done += len(leases) * ok
                errors += not ok

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    took = time.monotonic() - start
    print(json.dumps({"messages": done, "seconds": took, "rate": done / took, "errors": errors}))


if __name__ == "__main__":
    asyncio.run(main())
