-- Prepended to every script of src/server/hub/shared.rs, whose doc describes the keys.
-- A place's content is "<peer id> <instance> <public id or ->", then " <name>" if the person
-- gave one (a name may hold spaces, never a line break); places are numbered from 0. A room
-- whose media goes through a forwarding unit has a record "<owner instance> <epoch>".

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Peer id, instance, public id and name ('' for none) of a place's content.
local function parse(content)
  return string.match(content, '^(%S+) (%S+) (%S+) ?(.*)$')
end

-- A place's content.
local function content_of(peer, instance, public, name)
  if name == '' then
    return peer .. ' ' .. instance .. ' ' .. public
  end
  return peer .. ' ' .. instance .. ' ' .. public .. ' ' .. name
end

-- The room's places (place -> content), its size (nil for a new room), its version and its
-- media record (nil for a mesh).
local function room_of(room)
  local h = redis.call('HGETALL', room)
  local places, size, ver, media = {}, nil, 0, nil
  for i = 1, #h, 2 do
    if h[i] == 'size' then
      size = tonumber(h[i + 1])
    elseif h[i] == 'ver' then
      ver = tonumber(h[i + 1])
    elseif h[i] == 'media' then
      media = h[i + 1]
    else
      places[tonumber(h[i])] = h[i + 1]
    end
  end
  return places, size, ver, media
end

-- The instance a media record names.
local function owner_of(media)
  return media and string.match(media, '^(%S+)')
end

-- A media record put back from what an instance knows: its owner, if Redis lost the
-- heartbeats too, is taken to be alive now, and swept after the TTL if it is not.
local function owner_back(instances, media, now)
  local owner = owner_of(media)
  if owner and not redis.call('ZSCORE', instances, owner) then
    redis.call('ZADD', instances, now, owner)
  end
  return media
end

-- Whether an instance stopped: its last heartbeat is older than the TTL. Versions and
-- heartbeats are Redis's own clock, the one clock every instance shares. One that Redis does
-- not know is not taken for dead: Redis lost the heartbeats, and it has yet to beat again.
local function dead(instances, instance, now, ttl)
  local seen = redis.call('ZSCORE', instances, instance)
  return seen ~= false and seen ~= nil and tonumber(seen) < now - ttl
end

-- Every instance with someone in the room.
local function instances_in(places, into)
  for _, c in pairs(places) do
    local _, instance = parse(c)
    into[instance] = true
  end
  return into
end

-- The instance to carry a room's media: of the live ones with a forwarding unit and people in
-- the room, the one with the most, ties to the smallest id (sorted: `pairs` has no order); nil
-- if none. `me` is live, with a unit if `mine`; the others say whether they have one at each
-- heartbeat (`duo:units`).
local function pick_owner(instances, places, now, ttl, me, mine)
  local count, names = {}, {}
  for _, c in pairs(places) do
    local _, instance = parse(c)
    if not count[instance] then
      count[instance] = 0
      table.insert(names, instance)
    end
    count[instance] = count[instance] + 1
  end
  table.sort(names)
  local best = nil
  for _, instance in ipairs(names) do
    local able
    if instance == me then
      able = mine
    else
      able = not dead(instances, instance, now, ttl) and redis.call('SISMEMBER', 'duo:units', instance) == 1
    end
    if able and (not best or count[instance] > count[best]) then
      best = instance
    end
  end
  return best
end

-- Keeps each instance's set of rooms exact: it lists a room while the room has a place of
-- that instance. A join reads these sets to tell a room Redis lost from a new one.
-- The owner of its media counts as in the room while anyone is: if it dies, the sweep finds
-- the room and hands it on. `before`: the instances the room had before the change (and maybe
-- more).
local function index(rk, before, places, owner)
  local after = instances_in(places, {})
  if owner and next(places) then
    after[owner] = true
  end
  for instance in pairs(before) do
    if not after[instance] then
      redis.call('SREM', 'duo:inst:' .. instance .. ':rooms', rk)
    end
  end
  for instance in pairs(after) do
    redis.call('SADD', 'duo:inst:' .. instance .. ':rooms', rk)
  end
end

-- Writes the changed places (their content, or false when freed) under a new version, and
-- sends the change, in one message, to every instance in `told` but `except`; and on the
-- room's own channel, saying that `except` has it, to instances where someone waits to join
-- it. A version is Redis's clock in ms (or one more than the last), so it keeps growing if
-- Redis restarts empty. `told` holds at least every instance the room had before the change.
-- `media`: the room's media record, or only an instance for a new owner, whose epoch is then
-- this version (it only grows: it fences what a former owner says). Every change carries the
-- record, first, so each instance learns the owner before the people it concerns.
-- Returns the new version and the media record.
local function commit(room, rk, size, ver, places, changed, told, except, media)
  local new_ver = string.format('%.0f', math.max(ver + 1, now_ms()))
  local event = { rk .. ' ' .. new_ver }
  if media and not string.find(media, ' ') then
    media = media .. ' ' .. new_ver
  end
  if media then
    redis.call('HSET', room, 'media', media)
    table.insert(event, 'm ' .. media)
    -- The owner hears of every change, though it may have no one left in the room.
    told[owner_of(media)] = true
  end
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
  index(rk, told, places, owner_of(media))
  local text = table.concat(event, '\n')
  for instance in pairs(told) do
    if instance ~= except then
      redis.call('PUBLISH', 'duo:to:' .. instance, 'P ' .. text)
    end
  end
  redis.call('PUBLISH', 'duo:watch:' .. rk, 'W ' .. except .. ' ' .. text)
  return new_ver, media
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

-- Puts back what an instance (`me`) knows of a room, given as place, content, ... from
-- `argv[first]` on, wherever Redis has the place free; Redis keeps what it has. Each place put
-- back goes into `places` and `changed`, and its instance into `told`.
local function put_back(instances, size, places, changed, told, me, now, ttl, argv, first)
  for k = first, #argv, 2 do
    local i, c = tonumber(argv[k]), argv[k + 1]
    local _, instance = parse(c)
    if i < size and not places[i] then
      if instance ~= me and not redis.call('ZSCORE', instances, instance) then
        -- Redis lost its heartbeats too: taken to be alive now, swept after the TTL if not.
        redis.call('ZADD', instances, now, instance)
      end
      if instance == me or not dead(instances, instance, now, ttl) then
        -- If the person left meanwhile, their instance hears of them here and takes them out.
        places[i] = c
        changed[i] = c
        told[instance] = true
      end
    end
  end
end
