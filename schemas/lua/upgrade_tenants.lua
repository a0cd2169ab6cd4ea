-- Upgrade (cohortsync-admin migrate): the namespace's keys from before tenants become the default
-- tenant's (every audience then was its). Run again, or after the edge already queued changes
-- under the tenant's keys, nothing moves twice and nothing is lost:
-- - the old active list's audiences join the tenant's round-robin (once each);
-- - the old idle set merges into the tenant's, and the audiences by pending (which keep their
--   name: they are now the fleet's) are copied into the tenant's, once, with the totals;
-- - the tenant's totals take what the fleet's totals counted before tenants (the fleet's minus
--   what every tenant counted since), once: the fleet's totals are then marked;
-- - the tenant is ranked among tenants and, with work, scheduled.
-- KEYS[1] old active list, KEYS[2] old active set, KEYS[3] old dispatch credit, KEYS[4]
-- audiences by pending (the fleet's now), KEYS[5] old idle audiences, KEYS[6] old rate limiter, KEYS[7] the
-- tenant's active list, KEYS[8] its active set, KEYS[9] its audiences by pending, KEYS[10] its
-- idle audiences, KEYS[11] its totals, KEYS[12] fleet totals, KEYS[13] tenants by pending,
-- KEYS[14] tenants known, KEYS[15] tenants with work, then the totals of every other tenant
-- known. ARGV[1] the default tenant.
-- Returns {audiences added to the round-robin, 1 if the totals were split now, else 0}.
local tenant = ARGV[1]
local added = 0
for _, audience in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if redis.call('SADD', KEYS[8], audience) == 1 then
    redis.call('RPUSH', KEYS[7], audience)
    added = added + 1
  end
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('ZUNIONSTORE', KEYS[10], 2, KEYS[10], KEYS[5], 'AGGREGATE', 'MIN')
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6])

local split = 0
if redis.call('HSETNX', KEYS[12], 'tenants_split', 1) == 1 then
  split = 1
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('ZUNIONSTORE', KEYS[9], 2, KEYS[9], KEYS[4], 'AGGREGATE', 'MAX')
  end
  local fleet = redis.call('HGETALL', KEYS[12])
  for i = 1, #fleet, 2 do
    local field, v = fleet[i], tonumber(fleet[i + 1])
    if field ~= 'tenants_split' and field ~= 'in_totals' then
      local counted = tonumber(redis.call('HGET', KEYS[11], field) or '0')
      for k = 16, #KEYS do
        counted = counted + tonumber(redis.call('HGET', KEYS[k], field) or '0')
      end
      if v ~= counted then
        redis.call('HINCRBY', KEYS[11], field, v - counted)
      end
    end
  end
end
local pending = tonumber(redis.call('HGET', KEYS[11], 'pending') or '0')
if pending > 0 then
  redis.call('ZADD', KEYS[13], pending, tenant)
end
if redis.call('EXISTS', KEYS[11]) == 1 then
  redis.call('SADD', KEYS[14], tenant)
end
if redis.call('LLEN', KEYS[7]) > 0 then
  redis.call('ZADD', KEYS[15], 'NX', 0, tenant)
end
return {added, split}
