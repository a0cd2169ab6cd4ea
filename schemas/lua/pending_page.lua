-- One page of the audiences with pending changes, busiest first (Keys.audiences_pending), after
-- a cursor: O(log n + page) whatever the audiences. Ties in pending go by id, as the sorted set
-- keeps them (reverse byte order). When the cursor's audience still has the pending it had, the page starts right
-- after it; otherwise (it moved meanwhile) at the first audience with no more pending than the
-- cursor's, so an audience whose pending did not change is never skipped.
-- Also the pending of up to ARGV[4] audiences ranked before the page, which the finish-time
-- model needs (schemas/status.py).
-- KEYS[1] audiences by pending.
-- ARGV[1] the cursor's pending ('' for the first page), ARGV[2] the cursor's audience, ARGV[3]
-- page size, ARGV[4] most ranks before the page to return.
-- Returns {rank of the page's first audience, {audience, pending, ...} for the page, {pending,
-- ...} of ranks 0 to min(rank, ARGV[4]) - 1}.
local start = 0
if ARGV[1] ~= '' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    start = redis.call('ZREVRANK', KEYS[1], ARGV[2]) + 1
  else
    start = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
  end
end
local size = tonumber(ARGV[3])
local page = redis.call('ZREVRANGE', KEYS[1], start, start + size - 1, 'WITHSCORES')
local before = {}
local ranks = math.min(start, tonumber(ARGV[4]))
if ranks > 0 then
  local above = redis.call('ZREVRANGE', KEYS[1], 0, ranks - 1, 'WITHSCORES')
  for i = 2, #above, 2 do
    before[#before + 1] = above[i]
  end
end
return {start, page, before}
