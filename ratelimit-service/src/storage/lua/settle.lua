-- Settle: end a lease if it still exists (idempotent Complete / expiry).
local MINUTE = 60000
local lkey = prefix .. 'l:' .. P.lease_id
if redis.call('EXISTS', lkey) == 0 then return 0 end
if P.only_if_expired then
  local score = redis.call('ZSCORE', prefix .. 'leases', P.lease_id)
  if score and tonumber(score) > now then return 0 end
end
for _, s in ipairs(P.scopes) do
  if s.rpm >= 0 and s.rq ~= 0 then bucket_add(s.key .. ':rpm', s.rpm, MINUTE, s.rq) end
  if s.tpm >= 0 and s.tk ~= 0 then bucket_add(s.key .. ':tpm', s.tpm, MINUTE, s.tk) end
  local c = prefix .. 'c:' .. s.key
  if P.slot and (tonumber(redis.call('GET', c)) or 0) > 0 then redis.call('DECR', c) end
  spend_add(s.key, P.reserved_day, 'resv', -P.reserved)
  spend_add(s.key, P.reserved_month, 'resv', -P.reserved)
  spend_add(s.key, P.charge_day, 'spent', P.charge)
  spend_add(s.key, P.charge_month, 'spent', P.charge)
end
redis.call('DEL', lkey)
redis.call('ZREM', prefix .. 'leases', P.lease_id)
return 1
