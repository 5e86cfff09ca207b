-- Apply one batch of events atomically. Header (ARGV[1]) also has:
--   day  = "YYYYMMDD" ledger day of this batch, max_t = newest event time
-- then ARGV[2..] in groups of five: op, id, packed contribution, source, offset
--   op: "u" upsert, "c" cancel, "x" upsert that no longer counts (excluded),
--       "n" nothing but the offset (a dead letter)
--   source "topic:partition" and offset, or "" and "" (backfill, tests)
-- Returns {seq, applied, duplicate, cancelled, unknown_cancel, stale, retracted, cells}.
local LEDGER = P .. ':ledger'
local OFFSETS = P .. ':offsets'
local led, led_order = {}, {}
local offsets, new_offsets = {}, {}
local st = {applied = 0, duplicate = 0, cancelled = 0, unknown_cancel = 0, stale = 0,
            retracted = 0}

local function ledger_get(id)
  local v = led[id]
  if v == nil then
    v = redis.call('HGET', LEDGER, id)
    led[id] = v
  end
  if v then return string.sub(v, 10) end
  return false
end

local function ledger_set(id, value)
  if led[id] == nil then led[id] = redis.call('HGET', LEDGER, id) end
  led[id] = value
  led_order[#led_order + 1] = id
end

for j = 2, #ARGV, 5 do
  local op, id, packed, src, off = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  local fresh = true
  if src ~= '' then
    local last = offsets[src]
    if last == nil then
      last = tonumber(redis.call('HGET', OFFSETS, src) or '-1')
      offsets[src] = last
    end
    off = tonumber(off)
    if off <= last then
      fresh = false
      st.stale = st.stale + 1
    else
      offsets[src] = off
      new_offsets[src] = off
    end
  end
  if fresh and op ~= 'n' then
    local old = ledger_get(id)
    if op == 'u' then
      if old == packed then
        st.duplicate = st.duplicate + 1
      else
        if old then
          if not contribute(split(old), -1) then return redis.error_reply('NEEDS_REBASE') end
          st.retracted = st.retracted + 1
        end
        if not contribute(split(packed), 1) then return redis.error_reply('NEEDS_REBASE') end
        ledger_set(id, H.day .. US .. packed)
        st.applied = st.applied + 1
      end
    elseif op == 'c' or op == 'x' then
      if old then
        if not contribute(split(old), -1) then return redis.error_reply('NEEDS_REBASE') end
        ledger_set(id, false)
        st.cancelled = st.cancelled + 1
      elseif op == 'c' then
        st.unknown_cancel = st.unknown_cancel + 1
      end
    elseif op ~= 'n' then
      return redis.error_reply('UNKNOWN_OP ' .. tostring(op))
    end
  end
end

-- Everything checked: write.
local seen, day_ids = {}, {}
for _, id in ipairs(led_order) do
  if not seen[id] then
    seen[id] = true
    local v = led[id]
    if v then
      redis.call('HSET', LEDGER, id, v)
      day_ids[#day_ids + 1] = id
    else
      redis.call('HDEL', LEDGER, id)
    end
  end
end
if #day_ids > 0 then
  local day_key = P .. ':ledger:day:' .. H.day
  for i = 1, #day_ids, 1000 do
    redis.call('RPUSH', day_key, unpack(day_ids, i, math.min(i + 999, #day_ids)))
  end
  redis.call('SADD', P .. ':ledger:days', H.day)
end
for src, off in pairs(new_offsets) do
  redis.call('HSET', OFFSETS, src, off)
end
local cells = flush()
local seq = tonumber(redis.call('HGET', META, 'seq') or '0')
if cells > 0 then
  seq = redis.call('HINCRBY', META, 'seq', 1)
  local wm = tonumber(redis.call('HGET', META, 'watermark') or '0')
  if H.max_t > wm then redis.call('HSET', META, 'watermark', fmt(H.max_t)) end
end
return {seq, st.applied, st.duplicate, st.cancelled, st.unknown_cancel, st.stale, st.retracted,
        cells}
