-- Shared by every script: exact (double-double) sums, ledger parsing and the
-- write of accumulated per-cell changes.
--
-- A cell's record ({P}:cell:CELL) is a string of little-endian doubles:
--   n, last, hi_1..hi_H, lo_1..lo_H, then one entry per family and category
--   present: slot, count, v_1..v_H
-- (H horizons in the header's order; hi + lo is the double-double sum of the
-- terms; slot numbers name labels "f:FAMILY" / "c:CATEGORY" in {P}:labels).
-- Packed doubles cost a fraction of decimal text to read and write. KEYS[1] is the key prefix
-- ("{namespace}"), ARGV[1] a JSON header:
--   hz   = {{name, half_life_s, landmark_k}, ...}   (landmark_k: used when new)
--   prof = index in hz of the horizon that decays hour-of-week profiles
--   tr   = H3 resolution whose changed cells join {P}:touched (the alert
--          detector's work list), when alerting is on
--   min_t = oldest event time written (keeps {P}:meta first_t, the start of
--          the history the detector's baselines rest on)
local P = KEYS[1]
local H = cjson.decode(ARGV[1])
local NH = #H.hz
local META = P .. ':meta'
local US = '\31'

local function fmt(x)
  return string.format('%.17g', x)
end

-- Knuth's two-sum: s + e == a + b exactly.
local function two_sum(a, b)
  local s = a + b
  local bb = s - a
  return s, (a - (s - bb)) + (b - bb)
end

-- (hi, lo) + (bhi, blo) in double-double arithmetic: error ~1e-32 of the
-- magnitudes involved, so a retraction leaves what the other events sum to.
local function dd_add(hi, lo, bhi, blo)
  local s, e = two_sum(hi, bhi)
  e = e + (lo + blo)
  local s2 = s + e
  return s2, e - (s2 - s)
end

local function split(s)
  local out, i = {}, 1
  while true do
    local j = string.find(s, US, i, true)
    if not j then
      out[#out + 1] = string.sub(s, i)
      return out
    end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end

-- Landmarks live in the store, so that every writer agrees on them.
-- (Scripts check everything before their first write: Redis does not roll
-- back a script that fails half-way. The one exception is a label's slot
-- number, which may be assigned by a script that then refuses: harmless.)
local LAYOUT = {}
for i = 1, NH do LAYOUT[i] = H.hz[i][1] end
LAYOUT = table.concat(LAYOUT, ',')
local K, NEW_K = {}, {}
local stored_layout = redis.call('HGET', META, 'layout')
if stored_layout and stored_layout ~= LAYOUT then
  return redis.error_reply('LAYOUT_MISMATCH the store holds horizons [' .. stored_layout
    .. '], the config has [' .. LAYOUT .. ']: use a new store.namespace (or delete this one) '
    .. 'when horizons are added, removed or reordered')
end
for i = 1, NH do
  local name, hl = H.hz[i][1], H.hz[i][2]
  local stored = redis.call('HMGET', META, 'k:' .. name, 'hl:' .. name)
  if stored[1] then
    if tonumber(stored[2]) ~= hl then
      return redis.error_reply('HALF_LIFE_MISMATCH horizon ' .. name .. ' is stored with half-life '
        .. stored[2] .. ' s, config says ' .. fmt(hl) .. ' s')
    end
    K[i] = tonumber(stored[1])
  else
    K[i] = H.hz[i][3]
    NEW_K[#NEW_K + 1] = i
  end
end

local function save_new_landmarks()
  for _, i in ipairs(NEW_K) do
    redis.call('HSET', META, 'k:' .. H.hz[i][1], K[i], 'hl:' .. H.hz[i][1], fmt(H.hz[i][2]))
  end
  if not stored_layout then
    redis.call('HSET', META, 'layout', LAYOUT)
    stored_layout = LAYOUT
  end
end

-- record layout
local HEAD = 2 + 2 * NH  -- n, last, hi..., lo...
local E = 2 + NH         -- slot, count, v...

local DFMT = {}
local function dfmt(n)
  local f = DFMT[n]
  if not f then
    f = '<' .. string.rep('d', n)
    DFMT[n] = f
  end
  return f
end

local function doubles(raw)
  local x = {struct.unpack(dfmt(#raw / 8), raw)}
  x[#x] = nil  -- struct.unpack also returns the next position
  return x
end

-- labels ("f:FAMILY", "c:CATEGORY") to slot numbers, shared by every writer
local LABELS = P .. ':labels'
local SLOT = {}
local function slot_of(label)
  local s = SLOT[label]
  if s == nil then
    s = tonumber(redis.call('HGET', LABELS, label) or '0')
    if s == 0 then
      s = redis.call('HINCRBY', META, 'labels', 1)
      redis.call('HSET', LABELS, label, s)
    end
    SLOT[label] = s
  end
  return s
end

-- Accumulated changes per cell: n, last, hi/lo per horizon, e[slot] =
-- {count, v...}, w[hour of week] = profile-horizon term.
local D, ORDER = {}, {}

local add_cell_into  -- defined below

local function cell_delta(cell)
  local d = D[cell]
  if d and d.x then
    local x = d.x
    d.x = nil
    d.n, d.hi, d.lo, d.e, d.w = 0, {}, {}, {}, {}
    for i = 1, NH do
      d.hi[i] = 0.0
      d.lo[i] = 0.0
    end
    add_cell_into(d, x, d.slots)
  end
  if not d then
    d = {n = 0, hi = {}, lo = {}, e = {}, w = {}, last = nil}
    for i = 1, NH do
      d.hi[i] = 0.0
      d.lo[i] = 0.0
    end
    D[cell] = d
    ORDER[#ORDER + 1] = cell
  end
  return d
end

local function add_entry(d, slot, count, tv)
  local e = d.e[slot]
  if not e then
    e = {0}
    for i = 1, NH do e[i + 1] = 0.0 end
    d.e[slot] = e
  end
  e[1] = e[1] + count
  for i = 1, NH do e[i + 1] = e[i + 1] + tv[i] end
end

-- Add (sign 1) or take out (sign -1) one ledgered contribution:
-- t, w, family, category, hour-of-week, cells...
local FAM_SLOT, CAT_SLOT = {}, {}
local function contribute(p, sign)
  local t, w, how = tonumber(p[1]), tonumber(p[2]), tonumber(p[5])
  local sf, sc = FAM_SLOT[p[3]], CAT_SLOT[p[4]]
  if not sf then
    sf = slot_of('f:' .. p[3])
    FAM_SLOT[p[3]] = sf
  end
  if not sc then
    sc = slot_of('c:' .. p[4])
    CAT_SLOT[p[4]] = sc
  end
  local tv = {}
  for i = 1, NH do
    local x = t / H.hz[i][2]
    local n = math.floor(x)
    local v = math.ldexp(w * math.pow(2, x - n), n - K[i])
    if v ~= v or v == math.huge then
      return false
    end
    tv[i] = sign * v
  end
  local pv = tv[H.prof]
  for c = 6, #p do
    local d = cell_delta(p[c])
    d.n = d.n + sign
    for i = 1, NH do
      d.hi[i], d.lo[i] = dd_add(d.hi[i], d.lo[i], tv[i], 0.0)
    end
    add_entry(d, sf, sign, tv)
    add_entry(d, sc, sign, tv)
    d.w[how] = (d.w[how] or 0.0) + pv
    if sign > 0 and (d.last == nil or t > d.last) then d.last = t end
  end
  return true
end

function add_cell_into(d, x, slots)
  d.n = d.n + x[1]
  if x[1] > 0 and (d.last == nil or x[2] > d.last) then d.last = x[2] end
  for i = 1, NH do
    d.hi[i], d.lo[i] = dd_add(d.hi[i], d.lo[i], x[2 + i], x[2 + NH + i])
  end
  local ne, nh = x[HEAD + 1], x[HEAD + 2]
  local j = HEAD + 3
  local tv = {}
  for _ = 1, ne do
    for i = 1, NH do tv[i] = x[j + 1 + i] end
    add_entry(d, slots[x[j]], x[j + 1], tv)
    j = j + E
  end
  for _ = 1, nh do
    local how = x[j]
    d.w[how] = (d.w[how] or 0.0) + x[j + 1]
    j = j + 2
  end
end

-- Add one pre-aggregated cell (bulk merges and the live fast path): doubles
--   n, last, hi..., lo..., ne, nh, ne x (label index, count, v...), nh x (how, w)
-- where label index points into `slots` (slot numbers of the header's labels).
-- A cell nothing else touched keeps its decoded array as its change (d.x);
-- otherwise the array is added into the cell's accumulated change.
local function add_cell(cell, blob, slots)
  local x = doubles(blob)
  if D[cell] then
    add_cell_into(cell_delta(cell), x, slots)
  else
    D[cell] = {x = x, slots = slots}
    ORDER[#ORDER + 1] = cell
  end
end

local function label_slots(labels)
  local slots = {}
  for i, label in ipairs(labels or {}) do slots[i] = slot_of(label) end
  return slots
end

-- ranking updates, gathered per key and written with one ZADD/ZREM per key
-- (numbers go to Redis as they are: it formats them with 17 digits, exactly)
local RANK_ADD, RANK_DEL = {}, {}
local RANK_KEYS = {}

local function rank_keys(res)
  local t = RANK_KEYS[res]
  if not t then
    t = {}
    for i = 1, NH do
      local key = P .. ':rank:' .. H.hz[i][1] .. ':' .. res
      t[i] = key
      RANK_ADD[key] = {}
      RANK_DEL[key] = {}
    end
    RANK_KEYS[res] = t
  end
  return t
end

local function rank_key(i, res)
  return rank_keys(res)[i]
end

local function write_rankings()
  for key, t in pairs(RANK_DEL) do
    for b = 1, #t, 1000 do redis.call('ZREM', key, unpack(t, b, math.min(b + 999, #t))) end
  end
  for key, t in pairs(RANK_ADD) do
    for b = 1, #t, 2000 do redis.call('ZADD', key, unpack(t, b, math.min(b + 1999, #t))) end
  end
end

local PROFILE_FMT = '<' .. string.rep('f', 168)

local function unpack_profile(raw)
  local prof = {}
  if raw then
    if #raw < 672 then raw = raw .. string.rep('\0', 672 - #raw) end
    prof = {struct.unpack(PROFILE_FMT, raw)}
    prof[169] = nil  -- struct.unpack also returns the next position
  else
    for h = 1, 168 do prof[h] = 0.0 end
  end
  return prof
end

local function nonneg(x)
  if x < 0 then return 0.0 end
  return x
end

-- The hour-of-week profile is a string of 168 float32 of its own ({P}:how:CELL);
-- only the touched hours are read and written (GETRANGE/SETRANGE; a new key
-- is zero-padded by Redis), or the whole string when many hours change.
local function write_profile(cell, w)
  local how_key = P .. ':how:' .. cell
  local touched = 0
  for _ in pairs(w) do touched = touched + 1 end
  if touched > 8 then
    local prof = unpack_profile(redis.call('GET', how_key))
    for how, dw in pairs(w) do
      local h = how + 1
      prof[h] = nonneg(prof[h] + dw)
    end
    redis.call('SET', how_key, struct.pack(PROFILE_FMT, unpack(prof)))
  else
    for how, dw in pairs(w) do
      local off = how * 4
      local old = redis.call('GETRANGE', how_key, off, off + 3)
      local v = 0.0
      if #old == 4 then v = struct.unpack('<f', old) end
      redis.call('SETRANGE', how_key, off, struct.pack('<f', nonneg(v + dw)))
    end
  end
end

-- Add one entry (count, values src[base + 1 .. base + NH]) to record r;
-- `at` maps the record's slots to their positions. Returns true when the
-- entry's count fell to zero (the caller then compacts the record).
local function merge_entry(r, at, slot, count, src, base)
  local j = at[slot]
  if j then
    r[j + 1] = r[j + 1] + count
    for i = 1, NH do r[j + 1 + i] = nonneg(r[j + 1 + i] + src[base + i]) end
    return r[j + 1] <= 0
  elseif count > 0 then
    j = #r + 1
    r[j] = slot
    r[j + 1] = count
    for i = 1, NH do r[j + 1 + i] = nonneg(src[base + i]) end
    at[slot] = j
  end
  return false
end

-- The record without its emptied entries.
local function compact(r)
  local out = {}
  for j = 1, HEAD do out[j] = r[j] end
  for j = HEAD + 1, #r, E do
    if r[j + 1] > 0 then
      for q = 0, E - 1 do out[#out + 1] = r[j + q] end
    end
  end
  return out
end

-- Record r plus a change (an accumulated table, or a cell's decoded array);
-- returns the new record and the change's profile hours.
local function updated_record(r, d)
  local at, emptied = {}, false
  for j = HEAD + 1, #r, E do at[r[j]] = j end
  local x, w = d.x, d.w
  if x then
    r[1] = r[1] + x[1]
    if x[1] > 0 and x[2] > r[2] then r[2] = x[2] end
    for i = 1, NH do
      r[2 + i], r[2 + NH + i] = dd_add(r[2 + i], r[2 + NH + i], x[2 + i], x[2 + NH + i])
    end
    local k = HEAD + 3
    for _ = 1, x[HEAD + 1] do
      if merge_entry(r, at, d.slots[x[k]], x[k + 1], x, k + 1) then emptied = true end
      k = k + E
    end
    w = {}
    for _ = 1, x[HEAD + 2] do
      w[x[k]] = x[k + 1]
      k = k + 2
    end
  else
    r[1] = r[1] + d.n
    if d.last and d.last > r[2] then r[2] = d.last end
    for i = 1, NH do
      r[2 + i], r[2 + NH + i] = dd_add(r[2 + i], r[2 + NH + i], d.hi[i], d.lo[i])
    end
    for slot, e in pairs(d.e) do
      if merge_entry(r, at, slot, e[1], e, 1) then emptied = true end
    end
  end
  if emptied then r = compact(r) end
  return r, w
end

-- Write every accumulated cell change: one GET and one SET of its record,
-- its profile hours, and its score in each ranking.
local function flush()
  save_new_landmarks()
  local touched = {}  -- cells of the alert detector's resolution (H.tr)
  for _, cell in ipairs(ORDER) do
    local d = D[cell]
    local key = P .. ':cell:' .. cell
    local res = tonumber(string.sub(cell, 2, 2), 16)
    local rk = rank_keys(res)
    if res == H.tr then touched[#touched + 1] = cell end
    local raw = redis.call('GET', key)
    local r
    if raw then
      r = doubles(raw)
    else
      r = {0, 0}
      for i = 1, 2 * NH do r[2 + i] = 0.0 end
    end
    local dn = d.x and d.x[1] or d.n
    if not raw and dn <= 0 then
      -- the cell was pruned: what is being taken out had decayed to nothing
    elseif r[1] + dn <= 0 then
      redis.call('DEL', key, P .. ':how:' .. cell)
      for i = 1, NH do
        local t = RANK_DEL[rk[i]]
        t[#t + 1] = cell
      end
    else
      local w
      r, w = updated_record(r, d)
      for i = 1, NH do
        local hi = r[2 + i]
        if hi > 0 then
          local t = RANK_ADD[rk[i]]
          t[#t + 1] = hi
          t[#t + 1] = cell
        else
          local t = RANK_DEL[rk[i]]
          t[#t + 1] = cell
        end
      end
      redis.call('SET', key, struct.pack(dfmt(#r), unpack(r)))
      write_profile(cell, w)
    end
  end
  write_rankings()
  local tkey = P .. ':touched'
  for i = 1, #touched, 4000 do
    redis.call('SADD', tkey, unpack(touched, i, math.min(i + 3999, #touched)))
  end
  if H.min_t then
    local first = redis.call('HGET', META, 'first_t')
    if not first or H.min_t < tonumber(first) then
      redis.call('HSET', META, 'first_t', fmt(H.min_t))
    end
  end
  return #ORDER
end
