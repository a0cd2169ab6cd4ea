"""``cohortsync-admin set-rate``: the rate limit every worker shares, changed at runtime."""

from __future__ import annotations

import argparse
from typing import Any

from admin.connections import redis_client
from admin.errors import AdminError
from schemas import keys
from schemas.keys import Keys
from schemas.settings import Settings


async def command(settings: Settings, args: argparse.Namespace) -> int:
    if args.reset == (args.per_minute is not None) or (args.reset and args.burst is not None):
        raise AdminError("give either PER_MINUTE [--burst N] or --reset")
    client = redis_client(settings.redis_url)
    config = Keys(settings.queue_name).config
    try:
        async with client.pipeline(transaction=True) as pipe:
            if args.reset:
                # Only the override: the rates the workers publish there stay.
                pipe.hdel(config, keys.CONFIG_RATE, keys.CONFIG_BURST)
            else:
                fields: dict[str, int] = {keys.CONFIG_RATE: args.per_minute}
                if args.burst is not None:
                    fields[keys.CONFIG_BURST] = args.burst
                pipe.hset(config, mapping=fields)
            pipe.hget(config, keys.CONFIG_BURST)
            replies: list[Any] = await pipe.execute()
    finally:
        await client.aclose()
    if args.reset:
        print(
            "rate override removed: workers use their COHORTSYNC_RATE_LIMIT_PER_MINUTE and "
            "COHORTSYNC_RATE_BURST again"
        )
        return 0
    burst = replies[-1]
    burst_text = burst.decode() if burst is not None else f"{settings.rate_burst} (default)"
    rate_text = "unlimited" if args.per_minute == 0 else f"{args.per_minute} changes/min"
    print(
        f"rate set to {rate_text}, burst {burst_text}; every worker applies it at its next change"
    )
    return 0
