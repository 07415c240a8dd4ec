-- Shared by every script: the plan (JSON in ARGV[1]) and the GCRA bucket
-- arithmetic of src/limits/bucket.rs, operation for operation, so Redis and
-- memory stores compute the same doubles.
--
-- Integers go to Redis through string.format('%d'): Lua's default number
-- formatting (%.14g) would turn large values into 1e+15.
local P = cjson.decode(ARGV[1])
local prefix = P.prefix
local now = P.now

local function int(x)
  return string.format('%d', x)
end

-- Key names come from the plan (limits/keys.rs); only the prefix is added.
local function bucket_load(key)
  local v = redis.call('HMGET', prefix .. key, 'l', 't')
  return { l = tonumber(v[1]) or 0, t = tonumber(v[2]) or 0 }
end

local function level_at(b, limit, period)
  local p = period
  if p < 1 then p = 1 end
  local elapsed = now - b.t
  if elapsed < 0 then elapsed = 0 end
  local l = b.l - elapsed * limit / p
  if l < 0 then l = 0 end
  return l
end

local function bucket_check(b, limit, period, cost)
  local over = level_at(b, limit, period) + cost - limit
  if over <= 0 then return true, 0 end
  if limit == 0 then return false, period end
  return false, math.ceil(over * period / limit)
end

local function bucket_add(key, limit, period, delta)
  local b = bucket_load(key)
  local level = level_at(b, limit, period) + delta
  if level < 0 then level = 0 end
  local t = b.t
  if now > t then t = now end
  local full = prefix .. key
  redis.call('HSET', full, 'l', string.format('%.17g', level), 't', int(t))
  -- Kept until drained at this rate, plus one period of slack for a
  -- lowered limit; a drained bucket is the same as an absent one.
  local ttl = period + 1000
  if limit > 0 then ttl = ttl + math.ceil(level * period / limit) end
  redis.call('PEXPIRE', full, int(ttl))
end

local function bucket_view(key, limit, period)
  local level = level_at(bucket_load(key), limit, period)
  local remaining = math.floor(limit - level)
  if remaining < 0 then remaining = 0 end
  local reset = 0
  if limit > 0 and level > 0 then reset = math.ceil(level * period / limit) end
  return { limit, remaining, reset }
end

-- Calendar counters outlive their period by far: a lease reserved on the
-- last day of a month may settle after it.
local COUNTER_TTL_S = 100 * 86400

local function counter_get(key)
  local v = redis.call('HMGET', prefix .. key, 'spent', 'resv')
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end

local function counter_add(key, field, delta)
  local k = prefix .. key
  local cur = tonumber(redis.call('HGET', k, field)) or 0
  local v = cur + delta
  if v < 0 then v = 0 end
  redis.call('HSET', k, field, int(v))
  redis.call('EXPIRE', k, COUNTER_TTL_S)
end
