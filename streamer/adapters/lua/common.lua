-- Shared by every script: exact (double-double) sums, ledger parsing and the
-- write of accumulated per-cell changes. KEYS[1] is the key prefix
-- ("{namespace}"), ARGV[1] a JSON header:
--   hz   = {{name, half_life_s, landmark_k}, ...}   (landmark_k: used when new)
--   prof = index in hz of the horizon that decays hour-of-week profiles
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
-- back a script that fails half-way.)
local K, NEW_K = {}, {}
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
end

local D, ORDER = {}, {}

local function cell_delta(cell)
  local d = D[cell]
  if not d then
    d = {n = 0, hi = {}, lo = {}, nf = {}, F = {}, nc = {}, C = {}, w = {}, last = nil}
    for i = 1, NH do
      d.hi[i] = 0.0
      d.lo[i] = 0.0
    end
    D[cell] = d
    ORDER[#ORDER + 1] = cell
  end
  return d
end

local function add_vec(tbl, key, tv)
  local v = tbl[key]
  if not v then
    v = {}
    for i = 1, NH do v[i] = 0.0 end
    tbl[key] = v
  end
  for i = 1, NH do v[i] = v[i] + tv[i] end
end

-- Add (sign 1) or take out (sign -1) one ledgered contribution:
-- t, w, family, category, hour-of-week, cells...
local function contribute(p, sign)
  local t, w, fam, cat, how = tonumber(p[1]), tonumber(p[2]), p[3], p[4], p[5]
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
  for c = 6, #p do
    local d = cell_delta(p[c])
    d.n = d.n + sign
    for i = 1, NH do
      d.hi[i], d.lo[i] = dd_add(d.hi[i], d.lo[i], tv[i], 0.0)
    end
    d.nf[fam] = (d.nf[fam] or 0) + sign
    d.nc[cat] = (d.nc[cat] or 0) + sign
    add_vec(d.F, fam, tv)
    d.C[cat] = (d.C[cat] or 0.0) + tv[H.prof]
    d.w[how] = (d.w[how] or 0.0) + tv[H.prof]
    if sign > 0 and (d.last == nil or t > d.last) then d.last = t end
  end
  return true
end

-- field names, built once per script call
local FT, Ft, FF = {}, {}, {}
for i = 1, NH do
  FT[i] = 'T:' .. H.hz[i][1]
  Ft[i] = 't:' .. H.hz[i][1]
  FF[i] = 'F:' .. H.hz[i][1] .. ':'
end

-- ranking updates, gathered per key and written with one ZADD/ZREM per key
local RANK_ADD, RANK_DEL = {}, {}

local function rank_set(key, score, cell)
  local t = RANK_ADD[key]
  if not t then
    t = {}
    RANK_ADD[key] = t
  end
  t[#t + 1] = fmt(score)
  t[#t + 1] = cell
end

local function rank_del(key, cell)
  local t = RANK_DEL[key]
  if not t then
    t = {}
    RANK_DEL[key] = t
  end
  t[#t + 1] = cell
end

local function write_rankings()
  for key, t in pairs(RANK_DEL) do
    for b = 1, #t, 1000 do redis.call('ZREM', key, unpack(t, b, math.min(b + 999, #t))) end
  end
  for key, t in pairs(RANK_ADD) do
    for b = 1, #t, 2000 do redis.call('ZADD', key, unpack(t, b, math.min(b + 1999, #t))) end
  end
end

local function rank_key(i, res)
  return P .. ':rank:' .. H.hz[i][1] .. ':' .. res
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

-- Write every accumulated cell change: one HMGET, one HSET (and HDEL of
-- emptied breakdowns) per cell, and its score in each ranking.
local function flush()
  save_new_landmarks()
  for _, cell in ipairs(ORDER) do
    local d = D[cell]
    local key = P .. ':cell:' .. cell
    local res = tonumber(string.sub(cell, 2, 2), 16)
    local f = {'n', 'last'}
    for i = 1, NH do
      f[#f + 1] = FT[i]
      f[#f + 1] = Ft[i]
    end
    for fam, _ in pairs(d.nf) do
      f[#f + 1] = 'nf:' .. fam
      for i = 1, NH do f[#f + 1] = FF[i] .. fam end
    end
    for cat, _ in pairs(d.nc) do
      f[#f + 1] = 'nc:' .. cat
      f[#f + 1] = 'C:' .. cat
    end
    local v = redis.call('HMGET', key, unpack(f))
    local n_old = tonumber(v[1] or '0')
    local n_new = n_old + d.n
    if v[1] == false and d.n <= 0 then
      -- the cell was pruned: what is being taken out had decayed to nothing
    elseif n_new <= 0 then
      redis.call('DEL', key, P .. ':how:' .. cell)
      for i = 1, NH do rank_del(rank_key(i, res), cell) end
    else
      local out, gone = {'n', n_new}, {}
      local last = tonumber(v[2] or '0')
      if d.last and d.last > last then
        out[#out + 1] = 'last'
        out[#out + 1] = fmt(d.last)
      end
      local j = 3
      for i = 1, NH do
        local hi, lo = dd_add(tonumber(v[j] or '0'), tonumber(v[j + 1] or '0'), d.hi[i], d.lo[i])
        j = j + 2
        out[#out + 1] = FT[i]
        out[#out + 1] = fmt(hi)
        out[#out + 1] = Ft[i]
        out[#out + 1] = fmt(lo)
        if hi > 0 then
          rank_set(rank_key(i, res), hi, cell)
        else
          rank_del(rank_key(i, res), cell)
        end
      end
      for fam, dn in pairs(d.nf) do
        local cnt = tonumber(v[j] or '0') + dn
        j = j + 1
        if cnt <= 0 then
          gone[#gone + 1] = 'nf:' .. fam
          for i = 1, NH do gone[#gone + 1] = FF[i] .. fam end
          j = j + NH
        else
          out[#out + 1] = 'nf:' .. fam
          out[#out + 1] = cnt
          local dv = d.F[fam]
          for i = 1, NH do
            out[#out + 1] = FF[i] .. fam
            out[#out + 1] = fmt(nonneg(tonumber(v[j] or '0') + dv[i]))
            j = j + 1
          end
        end
      end
      for cat, dn in pairs(d.nc) do
        local cnt = tonumber(v[j] or '0') + dn
        if cnt <= 0 then
          gone[#gone + 1] = 'nc:' .. cat
          gone[#gone + 1] = 'C:' .. cat
        else
          out[#out + 1] = 'nc:' .. cat
          out[#out + 1] = cnt
          out[#out + 1] = 'C:' .. cat
          out[#out + 1] = fmt(nonneg(tonumber(v[j + 1] or '0') + d.C[cat]))
        end
        j = j + 2
      end
      -- The hour-of-week profile is a string of 168 float32 of its own, so
      -- that the cell hash stays small enough for Redis's compact encoding;
      -- only the touched hours are read and written (GETRANGE/SETRANGE; a
      -- new key is zero-padded by Redis).
      local how_key = P .. ':how:' .. cell
      local touched = 0
      for _ in pairs(d.w) do touched = touched + 1 end
      if touched > 8 then  -- many hours (bulk merges): rewrite the whole profile
        local prof = unpack_profile(redis.call('GET', how_key))
        for how, dw in pairs(d.w) do
          local h = tonumber(how) + 1
          prof[h] = nonneg(prof[h] + dw)
        end
        redis.call('SET', how_key, struct.pack(PROFILE_FMT, unpack(prof)))
      else
        for how, dw in pairs(d.w) do
          local off = tonumber(how) * 4
          local old = redis.call('GETRANGE', how_key, off, off + 3)
          local v = 0.0
          if #old == 4 then v = struct.unpack('<f', old) end
          redis.call('SETRANGE', how_key, off, struct.pack('<f', nonneg(v + dw)))
        end
      end
      redis.call('HSET', key, unpack(out))
      if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
    end
  end
  write_rankings()
  return #ORDER
end
