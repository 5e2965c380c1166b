-- Prepended to every script of src/server/hub/shared.rs, whose doc describes the keys.
-- A place's content is "<peer id> <instance> <public id or ->"; places are numbered from 0.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Peer id, instance and public id of a place's content.
local function parse(content)
  return string.match(content, '^(%S+) (%S+) (%S+)$')
end

-- The room's places (place -> content), its size (nil for a new room) and its version.
local function room_of(room)
  local h = redis.call('HGETALL', room)
  local places, size, ver = {}, nil, 0
  for i = 1, #h, 2 do
    if h[i] == 'size' then
      size = tonumber(h[i + 1])
    elseif h[i] == 'ver' then
      ver = tonumber(h[i + 1])
    else
      places[tonumber(h[i])] = h[i + 1]
    end
  end
  return places, size, ver
end

-- Whether an instance heartbeat within the TTL. Versions and heartbeats are Redis's own
-- clock, the one clock every instance shares.
local function alive(instances, instance, now, ttl)
  local seen = redis.call('ZSCORE', instances, instance)
  return seen ~= false and seen ~= nil and tonumber(seen) >= now - ttl
end

-- Every instance with someone in the room.
local function instances_in(places, into)
  for _, c in pairs(places) do
    local _, instance = parse(c)
    into[instance] = true
  end
  return into
end

-- Writes the changed places (their content, or false when freed) under a new version, and
-- sends the change, in one message, to every instance in `told` but `except`. A version is
-- Redis's clock in ms (or one more than the last), so it keeps growing if Redis restarts empty.
local function commit(room, rk, size, ver, places, changed, told, except)
  local new_ver = string.format('%.0f', math.max(ver + 1, now_ms()))
  local event = { 'P ' .. rk .. ' ' .. new_ver }
  for i, c in pairs(changed) do
    if c then
      redis.call('HSET', room, i, c)
    else
      redis.call('HDEL', room, i)
    end
    table.insert(event, i .. ' ' .. (c or '-'))
  end
  if next(places) == nil then
    redis.call('DEL', room)
  else
    redis.call('HSET', room, 'size', size, 'ver', new_ver)
  end
  local text = table.concat(event, '\n')
  for instance in pairs(told) do
    if instance ~= except then
      redis.call('PUBLISH', 'duo:to:' .. instance, text)
    end
  end
  return new_ver
end

-- The reply's tail: every occupied place and its content.
local function listed(places, size, out)
  for i = 0, size - 1 do
    if places[i] then
      table.insert(out, i)
      table.insert(out, places[i])
    end
  end
  return out
end
