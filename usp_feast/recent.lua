-- Distinct events of one sorted set, newest or oldest first, optionally filtered, in one round trip.
-- KEYS[1]  the entity's signal key
-- ARGV[1]  max event time (µs, inclusive)      ARGV[2]  min event time (µs, inclusive)
-- ARGV[3]  limit (distinct matching events)    ARGV[4]  as-of version, 16 digits
-- ARGV[5]  max members scanned (bounds the cost of filters and re-versioned history)
-- ARGV[6]  filter, JSON [[field, op, value], ...], or "" (see usp_feast/filters.py)
-- ARGV[7]  "newest" or "oldest"
-- Returns {complete, members, versions}: complete is 1 when the page is full or the range
-- exhausted, 0 when the scan cap stopped the read first (the caller reports it, never a short
-- page); versions is {i, n, ...} for each members[i] whose event has n > 1 versions visible
-- at as-of, so the common reply (every event written once) carries an empty list.
-- Each event counts once, at its newest version visible at as-of; the filter applies to that
-- version, so an event whose newest version stopped matching is not served from an older one.
-- Versions of one event share its event time (its score), which the version count relies on.
local key, max_ts, min_ts = KEYS[1], ARGV[1], ARGV[2]
local limit, as_of, cap = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local preds = nil
if ARGV[6] ~= nil and ARGV[6] ~= '' then preds = cjson.decode(ARGV[6]) end
local oldest_first = ARGV[7] == 'oldest'

local function equal(a, b)
  return type(a) == type(b) and a == b
end

local function holds(p, fields)
  local v, op, want = fields[p[1]], p[2], p[3]
  if v == nil or v == cjson.null then return false end
  if op == '==' then return equal(v, want) end
  if op == '!=' then return not equal(v, want) end
  if op == 'in' or op == 'not in' then
    local found = false
    for i = 1, #want do
      if equal(v, want[i]) then found = true break end
    end
    if op == 'in' then return found end
    return not found
  end
  if type(v) ~= 'number' then return false end
  if op == '<' then return v < want end
  if op == '<=' then return v <= want end
  if op == '>' then return v > want end
  return v >= want
end

-- Cheap screen before decoding: an equality on a plain string can only hold if the member's
-- JSON text contains `"field":"value"` (bodies are compact JSON; plain = no character JSON
-- would escape), so members without it are skipped undecoded. Everything else is decided on
-- the decoded body below.
local screens = {}
if preds ~= nil then
  for i = 1, #preds do
    local field, op, want = preds[i][1], preds[i][2], preds[i][3]
    local values = nil
    if op == '==' then values = {want} elseif op == 'in' then values = want end
    if values ~= nil then
      local needles = {}
      for j = 1, #values do
        local v = values[j]
        if type(v) ~= 'string' or not string.match(v, '^[%w _%.%-:]*$') then
          needles = nil
          break
        end
        needles[#needles + 1] = '"' .. field .. '":"' .. v .. '"'
      end
      if needles ~= nil then screens[#screens + 1] = needles end
    end
  end
end

local function screened_out(m, sep)
  for i = 1, #screens do
    local found = false
    for j = 1, #screens[i] do
      if string.find(m, screens[i][j], sep + 1, true) then found = true break end
    end
    if not found then return true end
  end
  return false
end

local function keep(m, sep)
  if preds == nil then return true end
  if screened_out(m, sep) then return false end
  local ok, body = pcall(cjson.decode, string.sub(m, sep + 1))
  if not ok or type(body) ~= 'table' or type(body['f']) ~= 'table' then return false end
  for i = 1, #preds do
    if not holds(preds[i], body['f']) then return false end
  end
  return true
end

local seen, out, offset, complete = {}, {}, 0, 0
-- Versions per event id visible at as-of, counted as members are scanned (no extra reads);
-- in the newest-first walk an id's first count is also its first sighting. `replayed` says
-- whether any id was seen twice: without one, every count is 1 and none is listed.
local counts, out_ids, replayed = {}, {}, false

local function id_of(m)
  return string.sub(m, 17, string.find(m, '\31', 17, true) - 1)
end

-- A member's event time as the text of its body's leading "ts" (usp_feast/versions.py
-- writes {"ts": ..., "f": ...}), or nil.
local function ts_of(m)
  return string.match(m, '^{"ts":(%-?%d+)', string.find(m, '\31', 17, true) + 1)
end
local batch = math.max(limit + 16, 64)
if preds ~= nil then batch = 512 end

if not oldest_first then
  -- Members sharing an event time sort newest version first (fixed-width prefix), so the
  -- first member seen for an event id is its newest version visible at as-of.
  local members, stop, size = {}, 0, 0
  while #out < limit and offset < cap do
    size = math.min(batch, cap - offset)
    members = redis.call('ZRANGE', key, max_ts, min_ts, 'BYSCORE', 'REV', 'LIMIT', offset, size)
    for i = 1, #members do
      local m = members[i]
      stop = i
      if string.sub(m, 1, 16) <= as_of then
        local sep = string.find(m, '\31', 17, true)
        local id = string.sub(m, 17, sep - 1)
        local n = counts[id]
        if n ~= nil then
          counts[id] = n + 1
          replayed = true
        else
          counts[id] = 1
          if keep(m, sep) then
            out[#out + 1] = m
            out_ids[#out] = id
            if #out >= limit then break end
          end
        end
      end
    end
    offset = offset + #members
    if #members < size then complete = 1 break end
  end
  if #out >= limit then
    -- The page filled part-way through its last event time: older versions of the events at
    -- that time may come after where the scan stopped. Count on through the fetched members
    -- of that time; only a fetch that ended inside it needs that time read whole.
    local ts = ts_of(out[#out])
    local whole = ts == nil
    for i = stop + 1, #members do
      local m = members[i]
      if ts_of(m) ~= ts then break end
      if string.sub(m, 1, 16) <= as_of then
        local id = id_of(m)
        local n = counts[id]
        if n ~= nil then replayed = true end
        counts[id] = (n or 0) + 1
      end
      if i == #members and #members == size then whole = true end
    end
    if stop == #members and #members == size then whole = true end
    if whole then
      local score = redis.call('ZSCORE', key, out[#out])
      local fresh = {}
      local all = redis.call('ZRANGE', key, score, score, 'BYSCORE', 'LIMIT', 0, cap)
      for i = 1, #all do
        local m = all[i]
        if string.sub(m, 1, 16) <= as_of then
          local id = id_of(m)
          fresh[id] = (fresh[id] or 0) + 1
        end
      end
      for id, n in pairs(fresh) do
        counts[id] = n
        if n > 1 then replayed = true end
      end
    end
  end
else
  -- Ascending, versions of one event time come oldest first: collect each event time's
  -- members, then emit every event at the last (newest) version seen for it.
  local group_score, group_ids, best = nil, {}, {}
  local function flush()
    for i = 1, #group_ids do
      local id = group_ids[i]
      if not seen[id] then
        seen[id] = true
        local m = best[id]
        if keep(m, string.find(m, '\31', 17, true)) then
          out[#out + 1] = m
          out_ids[#out] = id
          if #out >= limit then break end
        end
      end
    end
    group_ids, best = {}, {}
  end
  while #out < limit and offset < cap do
    local size = math.min(batch, cap - offset)
    local flat = redis.call('ZRANGE', key, min_ts, max_ts, 'BYSCORE', 'LIMIT', offset, size, 'WITHSCORES')
    local n = #flat / 2
    for i = 1, n do
      local m, score = flat[2 * i - 1], flat[2 * i]
      if score ~= group_score then
        flush()
        if #out >= limit then break end
        group_score = score
      end
      if string.sub(m, 1, 16) <= as_of then
        local id = string.sub(m, 17, string.find(m, '\31', 17, true) - 1)
        if best[id] == nil then group_ids[#group_ids + 1] = id end
        best[id] = m
        -- A group is flushed only once complete, so its events' counts are too.
        local known = counts[id]
        if known ~= nil then replayed = true end
        counts[id] = (known or 0) + 1
      end
    end
    offset = offset + n
    if #out < limit and n < size then
      flush()
      complete = 1
      break
    end
  end
end
if #out >= limit then
  complete = 1
  while #out > limit do table.remove(out) end
end
local versions = {}
if replayed then
  for i = 1, #out do
    local n = counts[out_ids[i]]
    if n > 1 then
      versions[#versions + 1] = i
      versions[#versions + 1] = n
    end
  end
end
return {complete, out, versions}
