-- Gives a person's place a new name, if the place is still theirs: those waiting to join see
-- it. (The others in the call hear it from the person's browser.)
-- KEYS: the room. ARGV: this instance, the peer id, the room key, the name ('' for none).
-- Returns 1 if the place changed.
local room = KEYS[1]
local me, peer, rk, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local places, size, ver, media = room_of(room)
for i, c in pairs(places) do
  local p, instance, public, old = parse(c)
  if p == peer and instance == me then
    if old == name then
      return 0
    end
    places[i] = content_of(p, me, public, name)
    commit(room, rk, size, ver, places, { [i] = places[i] }, instances_in(places, {}), me, media)
    return 1
  end
end
return 0
