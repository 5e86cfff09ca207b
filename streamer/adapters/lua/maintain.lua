-- Maintenance, run by one worker at a time (the leader's timer).
-- Header also has: op = "prune" | "rebase" | "trim", res = {resolutions...}
--   prune:  thr = {stored threshold per horizon}, at the landmarks in hz
--   rebase: new_k = {new landmark per horizon}
--   trim:   day = expired ledger day "YYYYMMDD", count = ids per call
local op = H.op
for i = 1, NH do
  if op ~= 'trim' and K[i] ~= H.hz[i][3] then
    return redis.error_reply('LANDMARK_MOVED ' .. H.hz[i][1])
  end
end
save_new_landmarks()
local longest = 1
for i = 2, NH do
  if H.hz[i][2] > H.hz[longest][2] then longest = i end
end

if op == 'prune' then
  -- A cell leaves a ranking when its decayed score is below the threshold;
  -- leaving the longest horizon's ranking (which decays slowest) deletes it.
  local removed, deleted = 0, 0
  for _, res in ipairs(H.res) do
    for i = 1, NH do
      local key = rank_key(i, res)
      local gone = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. fmt(H.thr[i]))
      for b = 1, #gone, 1000 do
        redis.call('ZREM', key, unpack(gone, b, math.min(b + 999, #gone)))
      end
      removed = removed + #gone
      if i == longest then
        for _, cell in ipairs(gone) do
          redis.call('DEL', P .. ':cell:' .. cell, P .. ':how:' .. cell)
          for o = 1, NH do
            if o ~= i then redis.call('ZREM', rank_key(o, res), cell) end
          end
        end
        deleted = deleted + #gone
      end
    end
  end
  -- (a ranking that lost entries changed: sizes, ranks, totals; readers cache by seq)
  if removed > 0 then redis.call('HINCRBY', META, 'seq', 1) end
  return {removed, deleted}
elseif op == 'rebase' then
  -- Multiply every stored number of a horizon by 2^(k_old - k_new): exact.
  local shift = {}
  local any = false
  for i = 1, NH do
    shift[i] = K[i] - H.new_k[i]
    if shift[i] ~= 0 then any = true end
  end
  if not any then return {0} end
  local touched = 0
  for _, res in ipairs(H.res) do
    local cells = redis.call('ZRANGE', rank_key(longest, res), 0, -1)
    for _, cell in ipairs(cells) do
      local key = P .. ':cell:' .. cell
      local raw = redis.call('GET', key)
      local r = raw and doubles(raw) or nil
      if r then
        for i = 1, NH do
          if shift[i] ~= 0 then
            r[2 + i] = math.ldexp(r[2 + i], shift[i])
            r[2 + NH + i] = math.ldexp(r[2 + NH + i], shift[i])
            for j = HEAD + 1, #r, E do r[j + 1 + i] = math.ldexp(r[j + 1 + i], shift[i]) end
          end
        end
        redis.call('SET', key, struct.pack(dfmt(#r), unpack(r)))
      end
      if shift[H.prof] ~= 0 then
        local how_key = P .. ':how:' .. cell
        local raw_prof = redis.call('GET', how_key)
        if raw_prof then
          local prof = unpack_profile(raw_prof)
          for h = 1, 168 do prof[h] = math.ldexp(prof[h], shift[H.prof]) end
          redis.call('SET', how_key, struct.pack(PROFILE_FMT, unpack(prof)))
        end
      end
      for i = 1, NH do
        if r and shift[i] ~= 0 and redis.call('ZSCORE', rank_key(i, res), cell) then
          local hi = r[2 + i]
          if hi > 0 then
            redis.call('ZADD', rank_key(i, res), hi, cell)
          else
            redis.call('ZREM', rank_key(i, res), cell)
          end
        end
      end
      touched = touched + 1
    end
  end
  for i = 1, NH do
    if shift[i] ~= 0 then redis.call('HSET', META, 'k:' .. H.hz[i][1], H.new_k[i]) end
  end
  redis.call('HINCRBY', META, 'seq', 1)
  return {touched}
elseif op == 'trim' then
  -- Forget ledger entries of an expired day, a chunk per call.
  local day_key = P .. ':ledger:day:' .. H.day
  local ids = redis.call('LPOP', day_key, H.count)
  local forgotten = 0
  if ids then
    for _, id in ipairs(ids) do
      local v = redis.call('HGET', P .. ':ledger', id)
      if v and string.sub(v, 1, 8) == H.day then
        redis.call('HDEL', P .. ':ledger', id)
        forgotten = forgotten + 1
      end
    end
  end
  local left = redis.call('LLEN', day_key)
  if left == 0 then redis.call('SREM', P .. ':ledger:days', H.day) end
  return {forgotten, left}
end
return redis.error_reply('UNKNOWN_MAINTENANCE_OP ' .. tostring(op))
