-- Frees a person's place, if it is still theirs (someone may have taken it over since).
-- KEYS: the room. ARGV: this instance, the peer id, the room key.
-- Returns 1 if the place was freed.
local room = KEYS[1]
local me, peer, rk = ARGV[1], ARGV[2], ARGV[3]
local places, size, ver, media = room_of(room)
local at = nil
for i, c in pairs(places) do
  local p, instance = parse(c)
  if p == peer and instance == me then
    at = i
  end
end
if not at then
  return 0
end
local told = instances_in(places, {})
places[at] = nil
commit(room, rk, size, ver, places, { [at] = false }, told, me, media)
return 1
