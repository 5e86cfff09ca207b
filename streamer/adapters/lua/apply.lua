-- Apply one batch of events atomically. Header (ARGV[1]) also has:
--   day  = "YYYYMMDD" ledger day of this batch, max_t = newest event time,
--   nslow = number of per-event ops, nfast = number of fast upserts,
--   fsrc = {{source, lowest offset, highest offset}, ...} of the fast upserts,
--   labels = {"f:FAMILY" | "c:CATEGORY", ...} named by the fast cells
-- then ARGV in this order:
--   nslow groups of five: op, id, packed contribution, source, offset
--     op (named in streamer.core.scoring): "u" UPSERT, "c" CANCEL, "r"
--         CANCEL_WITH_FIELDS (a cancel that carries the event's own
--         contribution), "x" UNCOUNT (an upsert that no longer counts),
--         "n" OFFSET_ONLY (nothing but the offset: a dead letter)
--     source "topic:partition" and offset, or "" and "" (backfill, tests)
--   nfast ids, then their nfast ledger values ("YYYYMMDD" US packed)
--   pairs of cell id and binary delta (see add_cell): the fast upserts, summed
-- Fast upserts are new events, each id once in the batch and not among the
-- per-event ops: they add pre-aggregated sums instead of one term at a time.
-- When that is not so in the store (an id already in the ledger, an offset
-- already applied, landmarks moved since the sums were computed), nothing is
-- written and the answer is {"retry", why, ...} for the caller to re-plan.
-- A cancel takes out what the ledger holds for its id (exact: the very terms
-- added). An "r" cancel whose id the ledger does not hold takes out its own
-- contribution instead, when every cell of it that the store still has holds
-- an event of its category (a cell pruned away is skipped, as a ledgered
-- cancel skips it); otherwise it is an unknown cancel and changes nothing.
-- A cancel leaves a tombstone in the ledger (the day, US, nothing), so that
-- a repeated cancel is recognised and taken out once only; an upsert of a
-- tombstoned id adds it as new. Tombstones are trimmed with their day.
-- Returns {seq, applied, duplicate, cancelled, unknown_cancel, stale, retracted, cells,
--          cancelled_by_fields, cancel_repeated} (cancelled: by id).
local LEDGER = P .. ':ledger'
local OFFSETS = P .. ':offsets'
local NSLOW = H.nslow
local NFAST = H.nfast
local FAST_IDS = 2 + 5 * NSLOW
local FAST_VALUES = FAST_IDS + NFAST
local FAST_CELLS = FAST_VALUES + NFAST

if NFAST > 0 then
  for i = 1, NH do
    if K[i] ~= H.hz[i][3] then return {'retry', 'landmarks'} end
  end
  local stale = {}
  for _, s in ipairs(H.fsrc) do
    local last = tonumber(redis.call('HGET', OFFSETS, s[1]) or '-1')
    if last >= s[2] then
      stale[#stale + 1] = s[1]
      stale[#stale + 1] = last
    end
  end
  if #stale > 0 then return {'retry', 'stale', unpack(stale)} end
  local known = {}
  for b = FAST_IDS, FAST_VALUES - 1, 4000 do
    local e = math.min(b + 3999, FAST_VALUES - 1)
    local v = redis.call('HMGET', LEDGER, unpack(ARGV, b, e))
    for q = 1, #v do
      if v[q] then known[#known + 1] = ARGV[b + q - 1] end
    end
  end
  if #known > 0 then return {'retry', 'known', unpack(known)} end
end

local led, led_order = {}, {}
local offsets, new_offsets = {}, {}
local st = {applied = 0, duplicate = 0, cancelled = 0, unknown_cancel = 0, stale = 0,
            retracted = 0, by_fields = 0, repeated = 0}
local TOMB = ''  -- a tombstone's contribution: none

local function ledger_get(id)
  local v = led[id]
  if v == nil then
    v = redis.call('HGET', LEDGER, id)
    led[id] = v
  end
  if v then return string.sub(v, 10) end
  return false
end

-- Category slots, read only: a cancel must not create labels.
local HELD_SLOT = {}
local function category_slot(category)
  local s = HELD_SLOT[category]
  if s == nil then
    s = tonumber(redis.call('HGET', LABELS, 'c:' .. category) or '0')
    HELD_SLOT[category] = s
  end
  return s
end

-- Whether the store holds what contribution p would take out: each of its
-- cells the store has (or this batch changed) keeps at least one event of
-- its category, and at least one such cell exists.
local function held(p)
  local slot = category_slot(p[4])
  if slot == 0 then return false end
  local any = false
  for c = 6, #p do
    local cell = p[c]
    local d = D[cell]
    local pending = (d and d.e[slot]) and d.e[slot][1] or 0
    local raw = redis.call('GET', P .. ':cell:' .. cell)
    local count = 0
    if raw then
      local x = doubles(raw)
      for j = HEAD + 1, #x, E do
        if x[j] == slot then
          count = x[j + 1]
          break
        end
      end
    end
    if raw or pending ~= 0 then
      if count + pending < 1 then return false end
      any = true
    end
  end
  return any
end

local function ledger_set(id, value)
  if led[id] == nil then led[id] = redis.call('HGET', LEDGER, id) end
  led[id] = value
  led_order[#led_order + 1] = id
end

for j = 2, FAST_IDS - 1, 5 do
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
    local live = old and old ~= TOMB
    if op == 'u' then
      if old == packed then
        st.duplicate = st.duplicate + 1
      else
        if live then
          if not contribute(split(old), -1) then return redis.error_reply('NEEDS_REBASE') end
          st.retracted = st.retracted + 1
        end
        if not contribute(split(packed), 1) then return redis.error_reply('NEEDS_REBASE') end
        ledger_set(id, H.day .. US .. packed)
        st.applied = st.applied + 1
      end
    elseif op == 'c' or op == 'x' or op == 'r' then
      if live then
        if not contribute(split(old), -1) then return redis.error_reply('NEEDS_REBASE') end
        ledger_set(id, H.day .. US .. TOMB)
        if op == 'x' then  -- a correction into a category that does not count
          st.retracted = st.retracted + 1
        else
          st.cancelled = st.cancelled + 1
        end
      elseif op == 'x' then
        -- nothing held by id: an excluded version adds nothing
      elseif old then
        st.repeated = st.repeated + 1
      elseif op == 'r' and held(split(packed)) then
        if not contribute(split(packed), -1) then return redis.error_reply('NEEDS_REBASE') end
        ledger_set(id, H.day .. US .. TOMB)
        st.by_fields = st.by_fields + 1
      else
        st.unknown_cancel = st.unknown_cancel + 1
      end
    elseif op ~= 'n' then
      return redis.error_reply('UNKNOWN_OP ' .. tostring(op))
    end
  end
end

-- Everything checked: write.
if NFAST > 0 then
  local slots = label_slots(H.labels)
  for j = FAST_CELLS, #ARGV, 2 do
    add_cell(ARGV[j], ARGV[j + 1], slots)
  end
  for _, s in ipairs(H.fsrc) do
    local cur = new_offsets[s[1]]
    if cur == nil or s[3] > cur then new_offsets[s[1]] = s[3] end
  end
  st.applied = st.applied + NFAST
end
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
local day_key = P .. ':ledger:day:' .. H.day
for b = 0, NFAST - 1, 2000 do
  local e = math.min(b + 1999, NFAST - 1)
  local kv = {}
  for q = b, e do
    kv[#kv + 1] = ARGV[FAST_IDS + q]
    kv[#kv + 1] = ARGV[FAST_VALUES + q]
  end
  redis.call('HSET', LEDGER, unpack(kv))
  redis.call('RPUSH', day_key, unpack(ARGV, FAST_IDS + b, FAST_IDS + e))
end
if #day_ids > 0 then
  for i = 1, #day_ids, 1000 do
    redis.call('RPUSH', day_key, unpack(day_ids, i, math.min(i + 999, #day_ids)))
  end
end
if #day_ids > 0 or NFAST > 0 then
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
  local newest = H.wm_t or H.max_t  -- (wm_t: the newest event added, when cancels carry times)
  if newest > wm then redis.call('HSET', META, 'watermark', fmt(newest)) end
end
return {seq, st.applied, st.duplicate, st.cancelled, st.unknown_cancel, st.stale, st.retracted,
        cells, st.by_fields, st.repeated}
