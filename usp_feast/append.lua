-- Append record versions to several sorted sets in one round trip (never overwrites).
-- KEYS     the entities' signal keys (on Redis Cluster: all in one hash slot)
-- ARGV[1]  retention cutoff: members scored below it are trimmed ("" keeps everything)
-- ARGV[2]  idle expiry of each key in ms ("" for none)
-- then, per key in KEYS order: n, followed by n (score, member) pairs
local cutoff, ttl = ARGV[1], ARGV[2]
local chunk = 2000 -- pairs per ZADD call: unpack() must stay within Lua's C stack
local at, sent = 3, 0
for k = 1, #KEYS do
  local key, n = KEYS[k], tonumber(ARGV[at])
  at = at + 1
  local last = at + 2 * n - 1
  while at <= last do
    local stop = math.min(at + 2 * chunk - 1, last)
    redis.call('ZADD', key, unpack(ARGV, at, stop))
    at = stop + 1
  end
  sent = sent + n
  if cutoff ~= '' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cutoff)
  end
  if ttl ~= '' then
    redis.call('PEXPIRE', key, ttl)
  end
end
return sent
