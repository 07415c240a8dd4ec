-- Reserve (the store side of Admit): check every limited hold, then reserve all or nothing. The plan
-- (limits/plan.rs) lists the holds in refusal order; this script, like
-- storage/memory.rs, knows no limit kinds.
local refused, wait = nil, 0
for i, h in ipairs(P.holds) do
  if h.lim >= 0 then
    local ok, w = true, 0
    if h.m == 'b' then
      ok, w = bucket_check(bucket_load(h.k), h.lim, h.p, h.c)
    elseif h.m == 'q' then
      local spent, resv = counter_get(h.k)
      if spent + resv + h.c > h.lim then ok, w = false, h.r end
    else
      local n = tonumber(redis.call('GET', prefix .. h.k)) or 0
      if n >= h.lim then ok = false end
    end
    if not ok then
      if refused == nil then refused = i - 1 end
      if w > wait then wait = w end
    end
  end
end

if refused == nil then
  for _, h in ipairs(P.holds) do
    if h.m == 'b' then
      if h.lim >= 0 then bucket_add(h.k, h.lim, h.p, h.c) end
    elseif h.m == 'q' then
      counter_add(h.k, 'resv', h.c)
    else
      redis.call('INCRBY', prefix .. h.k, int(h.c))
    end
  end
  redis.call('SET', prefix .. 'l:' .. P.lease_id, P.lease_json)
  redis.call('ZADD', prefix .. 'leases', int(P.expires), P.lease_id)
end

-- A view per reported hold: `false` where there is none (cjson arrays
-- cannot hold nil).
local views = {}
for i, h in ipairs(P.holds) do
  local v = false
  if h.lim >= 0 and h.v then
    if h.m == 'b' then
      v = bucket_view(h.k, h.lim, h.p)
    elseif h.m == 'q' then
      local spent, resv = counter_get(h.k)
      local remaining = h.lim - spent - resv
      if remaining < 0 then remaining = 0 end
      v = { h.lim, remaining, h.r }
    end
  end
  views[i] = v
end
local reply = { wait = wait, views = views }
if refused ~= nil then reply.refused = refused end
return cjson.encode(reply)
