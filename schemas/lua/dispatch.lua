-- Move changes from the per-audience backlogs into arq's queue, round-robin across audiences,
-- only while arq's ready queue is below the watermark. Atomic: an entry leaves its backlog in the
-- same step that creates its arq job, so a crash in between cannot lose it.
-- KEYS[1] arq queue (sorted set), KEYS[2] active list, KEYS[3] active set, KEYS[4] cleared hash,
-- KEYS[5] backlog total, KEYS[6] leases (running jobs, which count against the watermark too).
-- ARGV[1] watermark, ARGV[2] most jobs to create, ARGV[3] entries per audience per turn,
-- ARGV[4] backlog key prefix, ARGV[5] stats key prefix, ARGV[6] arq job key prefix,
-- ARGV[7] arq function name.
-- Backlog keys are derived from the active list, so this script assumes a single Redis node.
-- Returns {jobs created, stale entries dropped, ready jobs before, backlog total after}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', now_ms) + redis.call('ZCARD', KEYS[6])
local room = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - ready)
local created, dropped = 0, 0
if room > 0 then
  local quantum = tonumber(ARGV[3])
  -- Skipping stale entries costs no job; still bound the work one call may do.
  local budget = room * 20
  while created < room and budget > 0 do
    local audience = redis.call('LMOVE', KEYS[2], KEYS[2], 'LEFT', 'RIGHT')
    if not audience then
      break
    end
    local backlog = ARGV[4] .. audience
    local stats = ARGV[5] .. audience
    local entries = redis.call('LPOP', backlog, math.min(quantum, room - created))
    local took, stale = 0, 0
    if entries then
      local cleared = tonumber(redis.call('HGET', KEYS[4], audience) or '0')
      local audience_id = tonumber(audience)
      for _, e in ipairs(entries) do
        local colon = string.find(e, ':', 2, true)
        local version_s = string.sub(e, 2, colon - 1)
        local version = tonumber(version_s)
        budget = budget - 1
        if version < cleared then
          stale = stale + 1
        else
          local id = 'cs:' .. audience .. ':' .. version_s
          -- arq's job layout (arq.jobs.serialize_job) in msgpack; 'et' is the acceptance time.
          local job = cmsgpack.pack({
            t = 1,
            f = ARGV[7],
            a = {audience_id, string.sub(e, colon + 1), string.sub(e, 1, 1) == 'a', version},
            et = math.floor(version / 1000),
          })
          redis.call('SET', ARGV[6] .. id, job)
          redis.call('ZADD', KEYS[1], now_ms, id)
          took = took + 1
        end
      end
      if took > 0 then
        redis.call('HINCRBY', stats, 'dispatched', took)
      end
      if stale > 0 then
        redis.call('HINCRBY', stats, 'dropped', stale)
      end
      created = created + took
      dropped = dropped + stale
    end
    if redis.call('LLEN', backlog) == 0 then
      redis.call('LREM', KEYS[2], -1, audience)
      redis.call('SREM', KEYS[3], audience)
    end
  end
end
local total = 0
if created + dropped > 0 then
  total = redis.call('DECRBY', KEYS[5], created + dropped)
else
  total = tonumber(redis.call('GET', KEYS[5]) or '0')
end
return {created, dropped, ready, total}
