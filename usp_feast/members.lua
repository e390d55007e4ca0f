-- One page of a segment's current members, newest entry first, skipping expired members.
-- KEYS[1]  members: sorted set of user ids scored by entry time (ms)
-- KEYS[2]  expiries: hash of user id -> expiry time (ms)
-- ARGV[1]  page size, ARGV[2] now (ms)
-- ARGV[3]  cursor score ("" for the first page), ARGV[4] cursor member
-- Returns {next_score, next_member, user, entered, expires, user, entered, expires, ...};
-- next_score is "" when the listing is complete.
local limit, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local cursor_score, cursor_member = ARGV[3], ARGV[4]
-- Work per call is bounded whatever the set holds: O(log N) to find the start, then at most
-- `budget` entries examined (expired members the job has not removed yet are skipped).
local budget = limit * 4 + 100
local start = 0
if cursor_score ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], cursor_member)
  local score = rank and redis.call('ZSCORE', KEYS[1], cursor_member)
  if rank and tonumber(score) == tonumber(cursor_score) then
    start = rank + 1
  else
    -- The cursor's member left meanwhile: resume after its score (ties are skipped below).
    start = redis.call('ZCOUNT', KEYS[1], '(' .. cursor_score, '+inf')
  end
end
local out = {'', ''}
local found, examined = 0, 0
local chunk = math.min(limit * 2, 500)
while found < limit and examined < budget do
  local entries = redis.call('ZREVRANGE', KEYS[1], start, start + chunk - 1, 'WITHSCORES')
  if #entries == 0 then
    return out
  end
  local users = {}
  for i = 1, #entries, 2 do users[#users + 1] = entries[i] end
  local expiries = redis.call('HMGET', KEYS[2], unpack(users))
  for i = 1, #users do
    local user, score = users[i], entries[2 * i]
    examined = examined + 1
    local tie = cursor_score ~= '' and tonumber(score) == tonumber(cursor_score)
    if not (tie and user >= cursor_member) then
      local expires = tonumber(expiries[i])
      if expires and expires > now then
        out[#out + 1] = user
        out[#out + 1] = score
        out[#out + 1] = expiries[i]
        found = found + 1
      end
      out[1], out[2] = score, user
    end
    if found >= limit or examined >= budget then
      return out
    end
  end
  start = start + chunk
end
return out
