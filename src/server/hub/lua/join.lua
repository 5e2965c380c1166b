-- Takes a place, atomically: two instances can never both get the last one, and no one gets
-- a place in a room Redis lost while people may still be in it.
-- KEYS: the room, the instances' heartbeats.
-- ARGV: this instance, the peer id, its public id or '-', the room size for a new room, the
-- room key, the heartbeat TTL in ms, the name ('' for none), the media mode ('mesh', 'sfu' or
-- 'auto'), how many people an 'auto' room holds before it moves to a forwarding unit, the
-- media record this instance knows ('-' for none), then, if this instance has people in the
-- room, what it knows of it: place, content, place, content, ...
-- Returns {'full'}; {'retry'} (the peer id is taken: draw another); {'lost'} (Redis lost the
-- room, whose people's instances have not put it back yet: try again); or {'ok', place,
-- version, size, media record or '-', place, content, ...} with every occupied place, the new
-- one included.
-- A room's media moves to a forwarding unit (an owner is picked) when the mode says so; it
-- stays there until the room empties, and gets a new owner if its owner died.
local room, instances = KEYS[1], KEYS[2]
local me, peer, public, rk, ttl, name = ARGV[1], ARGV[2], ARGV[3], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local mode, move_at, known_media = ARGV[8], tonumber(ARGV[9]), ARGV[10]
local now = now_ms()

-- Whether a room Redis does not have may still have people somewhere: Redis forgot this
-- instance (it lost everything, and this instance has not beaten since), or lately lost
-- everything (instances may not have put their rooms back yet), or a live instance lists the
-- room (its key alone was lost).
local function may_be_held()
  if not redis.call('ZSCORE', instances, me) or redis.call('EXISTS', 'duo:recovering') == 1 then
    return true
  end
  for _, instance in ipairs(redis.call('ZRANGEBYSCORE', instances, now - ttl, '+inf')) do
    if redis.call('SISMEMBER', 'duo:inst:' .. instance .. ':rooms', rk) == 1 then
      return true
    end
  end
  return false
end

local places, size, ver, media = room_of(room)
local told = instances_in(places, {})
local changed, mine = {}, nil
if not size then
  size = tonumber(ARGV[4])
  if #ARGV > 10 then
    -- Lost while this instance has people in it: they are put back before anyone new comes,
    -- and so is the owner of its media.
    put_back(instances, size, places, changed, told, me, now, ttl, ARGV, 11)
    if known_media ~= '-' then
      media = owner_back(instances, known_media, now)
    end
  elseif may_be_held() then
    return { 'lost' }
  end
end
for i = 0, size - 1 do
  local c = places[i]
  if c then
    local p, instance, q = parse(c)
    if p == peer then
      return { 'retry' }
    end
    if instance ~= me and dead(instances, instance, now, ttl) then
      -- Left behind by an instance that died and is not swept yet.
      places[i] = nil
      changed[i] = false
    elseif public ~= '-' and q == public then
      -- The same person, back: they take their place again.
      mine = i
    end
  end
end
if not mine then
  for i = 0, size - 1 do
    if not places[i] then
      mine = i
      break
    end
  end
end
if not mine then
  if next(changed) then
    -- What was put back stays, full as it is.
    commit(room, rk, size, ver, places, changed, told, me, media)
  end
  return { 'full' }
end
places[mine] = content_of(peer, me, public, name)
changed[mine] = places[mine]
local owner = owner_of(media)
if owner and owner ~= me and dead(instances, owner, now, ttl) then
  owner = nil
end
local seated = 0
for _ in pairs(places) do
  seated = seated + 1
end
if not owner and (media or mode == 'sfu' or (mode == 'auto' and seated > move_at)) then
  media = pick_owner(instances, places, now, ttl, me, mode ~= 'mesh')
end
local new_ver, record = commit(room, rk, size, ver, places, changed, told, me, media)
return listed(places, size, { 'ok', mine, new_ver, size, record or '-' })
