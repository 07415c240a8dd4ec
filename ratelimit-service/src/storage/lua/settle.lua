-- Settle: end a lease if it still exists (idempotent Complete / expiry),
-- applying the plan's moves in order.
local lkey = prefix .. 'l:' .. P.lease_id
if redis.call('EXISTS', lkey) == 0 then return 0 end
if P.only_if_expired then
  local score = redis.call('ZSCORE', prefix .. 'leases', P.lease_id)
  if score and tonumber(score) > now then return 0 end
end
for _, m in ipairs(P.moves) do
  if m.m == 'b' then
    bucket_add(m.k, m.lim, m.p, m.d)
  elseif m.m == 's' then
    counter_add(m.k, 'spent', m.d)
  elseif m.m == 'r' then
    counter_add(m.k, 'resv', m.d)
  else
    local c = prefix .. m.k
    if (tonumber(redis.call('GET', c)) or 0) > 0 then redis.call('DECR', c) end
  end
end
redis.call('DEL', lkey)
redis.call('ZREM', prefix .. 'leases', P.lease_id)
return 1
