-- Envoy RLS: every enforced hit fits, or nothing is applied.
local fits = {}
local allowed = true
for i, h in ipairs(P.hits) do
  local ok = true
  if h.hits > 0 then ok = bucket_check(bucket_load(h.key), h.limit, h.period, h.hits) end
  fits[i] = ok
  if (not ok) and h.enforce then allowed = false end
end
if allowed then
  for i, h in ipairs(P.hits) do
    if fits[i] then bucket_add(h.key, h.limit, h.period, h.hits) end
  end
end
local results = {}
for i, h in ipairs(P.hits) do
  local v = bucket_view(h.key, h.limit, h.period)
  results[i] = { fits[i], v[1], v[2], v[3] }
end
return cjson.encode({ allowed = allowed, results = results })
