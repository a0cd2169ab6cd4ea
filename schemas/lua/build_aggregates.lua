-- Upgrade (cohortsync-admin migrate): bring audiences whose counters were written before the
-- aggregates existed (all of them the default tenant's) into them (lib/counts.lua): each stats
-- hash adds its counters into the totals once (it is marked in the same step), and the audience
-- is ranked by its pending. Run again, or beside live scripts that do the same on first touch,
-- nothing counts twice.
-- KEYS[1..7] the default tenant's aggregates (every audience from before tenants is its), then
-- per audience: its backlog, its stats hash. ARGV[1] the tenant, then the audience ids.
-- Returns how many stats hashes joined the totals.
--#include counts
local agg = aggregates(1, ARGV[1])
local now_ms = redis_now_ms()
local joined = 0
for i = 2, #ARGV do
  local backlog, stats = KEYS[6 + 2 * (i - 1)], KEYS[7 + 2 * (i - 1)]
  -- Only counters from before the aggregates: any script since then ranked its audience in
  -- its own tenant's aggregates (and an audience of another tenant is not the default's).
  if redis.call('HEXISTS', stats, 'in_totals') == 0 then
    joined = joined + 1
    rank_audience(agg, ARGV[i], stats, backlog, now_ms)
  end
end
return joined
