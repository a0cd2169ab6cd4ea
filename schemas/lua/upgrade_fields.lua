-- Upgrade (cohortsync-admin migrate): merge fields of a hash of the layout before namespaces into
-- the namespace's hash, each field deleted from the old hash in the same step: run again, each is
-- merged once.
-- KEYS[1] old hash, KEYS[2] hash; for an audience's counters, KEYS[3..9] the default tenant's
-- aggregates (lib/counts.lua), which the counters added join.
-- ARGV[1] how a field merges: 'add' (counters), 'max' (versions) or 'keep' (set only where the
-- hash lacks it), ARGV[2] the tenant, ARGV[3..] the fields (one already gone is skipped).
-- Returns the number of fields merged.
--#include counts
local how = ARGV[1]
local agg = aggregates(3, ARGV[2])
local merged = 0
for i = 3, #ARGV do
  local field = ARGV[i]
  local value = redis.call('HGET', KEYS[1], field)
  if value then
    if how == 'add' and agg.totals then
      add_count(agg, KEYS[2], field, value)
    elseif how == 'add' then
      redis.call('HINCRBY', KEYS[2], field, value)
    elseif how == 'max' then
      local current = redis.call('HGET', KEYS[2], field)
      if not current or tonumber(value) > tonumber(current) then
        redis.call('HSET', KEYS[2], field, value)
      end
    else
      redis.call('HSETNX', KEYS[2], field, value)
    end
    redis.call('HDEL', KEYS[1], field)
    merged = merged + 1
  end
end
return merged
