-- Admit: check every limit of every scope, then reserve all or nothing.
local MINUTE = 60000
local first_kind, first_scope, wait = nil, nil, 0
local function fail(kind, i, w)
  if first_kind == nil then
    first_kind = kind
    first_scope = i - 1
  end
  if w > wait then wait = w end
end

for i, s in ipairs(P.scopes) do
  local limits = { { s.daily, P.day, 'daily_budget' }, { s.monthly, P.month, 'monthly_budget' } }
  for _, l in ipairs(limits) do
    if l[1] >= 0 then
      local spent, resv = spend_get(s.key, l[2])
      if spent + resv + P.cost > l[1] then fail(l[3], i, 0) end
    end
  end
end
for i, s in ipairs(P.scopes) do
  if s.rpm >= 0 then
    local ok, w = bucket_check(bucket_load(s.key .. ':rpm'), s.rpm, MINUTE, 1)
    if not ok then fail('requests', i, w) end
  end
end
for i, s in ipairs(P.scopes) do
  if s.tpm >= 0 then
    local ok, w = bucket_check(bucket_load(s.key .. ':tpm'), s.tpm, MINUTE, P.tokens)
    if not ok then fail('tokens', i, w) end
  end
end
for i, s in ipairs(P.scopes) do
  if s.conc >= 0 then
    local n = tonumber(redis.call('GET', prefix .. 'c:' .. s.key)) or 0
    if n >= s.conc then fail('concurrency', i, 0) end
  end
end

if first_kind == nil then
  for _, s in ipairs(P.scopes) do
    if s.rpm >= 0 then bucket_add(s.key .. ':rpm', s.rpm, MINUTE, 1) end
    if s.tpm >= 0 then bucket_add(s.key .. ':tpm', s.tpm, MINUTE, P.tokens) end
    if P.slot then redis.call('INCR', prefix .. 'c:' .. s.key) end
    spend_add(s.key, P.day, 'resv', P.cost)
    spend_add(s.key, P.month, 'resv', P.cost)
  end
  redis.call('SET', prefix .. 'l:' .. P.lease_id, P.lease_json)
  redis.call('ZADD', prefix .. 'leases', int(P.expires), P.lease_id)
end

local views = {}
for i, s in ipairs(P.scopes) do
  local v = {}
  if s.rpm >= 0 then v.r = bucket_view(s.key .. ':rpm', s.rpm, MINUTE) end
  if s.tpm >= 0 then v.t = bucket_view(s.key .. ':tpm', s.tpm, MINUTE) end
  views[i] = v
end
return cjson.encode({ ok = first_kind == nil, kind = first_kind, scope = first_scope, wait = wait, views = views })
