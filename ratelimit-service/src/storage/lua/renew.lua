-- Renew: move the expiry of known leases; return the unknown ids.
local unknown = {}
for _, id in ipairs(P.ids) do
  if redis.call('ZSCORE', prefix .. 'leases', id) then
    redis.call('ZADD', prefix .. 'leases', 'XX', int(P.expires), id)
  else
    table.insert(unknown, id)
  end
end
return unknown
