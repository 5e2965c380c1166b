-- Takes a place, atomically: two instances can never both get the last one.
-- KEYS: the room, the instances' heartbeats, this instance's rooms.
-- ARGV: this instance, the peer id, its public id or '-', the room size for a new room, the
-- room key, the heartbeat TTL in ms.
-- Returns {'full'}; {'retry'} (the peer id is taken: draw another); or {'ok', place, version,
-- size, place, content, ...} with every occupied place, the new one included.
local room, instances, my_rooms = KEYS[1], KEYS[2], KEYS[3]
local me, peer, public, rk, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[5], tonumber(ARGV[6])
local now = now_ms()
local places, size, ver = room_of(room)
size = size or tonumber(ARGV[4])
local told = instances_in(places, {})
local changed, mine = {}, nil
for i = 0, size - 1 do
  local c = places[i]
  if c then
    local p, instance, q = parse(c)
    if p == peer then
      return { 'retry' }
    end
    if instance ~= me and not alive(instances, instance, now, ttl) then
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
  return { 'full' }
end
places[mine] = peer .. ' ' .. me .. ' ' .. public
changed[mine] = places[mine]
local new_ver = commit(room, rk, size, ver, places, changed, told, me)
redis.call('SADD', my_rooms, rk)
return listed(places, size, { 'ok', mine, new_ver, size })
