-- Upgrade (cohortsync-admin migrate): rename Amplitude de-duplication keys of the layout before
-- namespaces into the namespace, each keeping its TTL (RENAME keeps it). Where the namespace
-- already holds the key, the old one is dropped.
-- KEYS pairs: an old seen key, its name in the namespace.
-- Returns the number of keys renamed.
local renamed = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('EXISTS', KEYS[i + 1]) == 1 then
      redis.call('DEL', KEYS[i])
    else
      redis.call('RENAME', KEYS[i], KEYS[i + 1])
      renamed = renamed + 1
    end
  end
end
return renamed
