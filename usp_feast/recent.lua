-- Newest-first distinct events of one sorted set, in one round trip.
-- KEYS[1]  the entity's signal key
-- ARGV[1]  max event time (µs, inclusive)      ARGV[2]  min event time (µs, inclusive)
-- ARGV[3]  limit (distinct events)             ARGV[4]  as-of version, 16 digits
-- ARGV[5]  max members scanned (bounds the cost of heavily re-versioned history)
-- Members sharing an event time sort newest version first (fixed-width prefix), so the
-- first member seen for an event id is its newest version visible at as-of.
local key, max_ts, min_ts = KEYS[1], ARGV[1], ARGV[2]
local limit, as_of, cap = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local seen, out, offset = {}, {}, 0
local batch = math.max(limit + 16, 64)
while #out < limit and offset < cap do
  local members = redis.call('ZRANGE', key, max_ts, min_ts, 'BYSCORE', 'REV', 'LIMIT', offset, batch)
  for i = 1, #members do
    local m = members[i]
    if string.sub(m, 1, 16) <= as_of then
      local sep = string.find(m, '\31', 17, true)
      local id = string.sub(m, 17, sep - 1)
      if not seen[id] then
        seen[id] = true
        out[#out + 1] = m
        if #out >= limit then break end
      end
    end
  end
  offset = offset + #members
  if #members < batch then break end
end
return out
