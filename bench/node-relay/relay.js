// The reference relay: the architecture of the classic WebRTC signaling tutorials, a Node `ws`
// server relaying each text message to the other member of its room (rooms of two).
//   node relay.js 3402
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] ?? 3402);
const rooms = new Map();
const server = new WebSocketServer({ host: '127.0.0.1', port });

server.on('connection', (socket, request) => {
  const room = request.url.replace(/^\/ws\//, '');
  const members = rooms.get(room) ?? [];
  if (members.length >= 2) return socket.close(4001, 'room full');
  members.push(socket);
  rooms.set(room, members);
  socket.on('message', (data, isBinary) => {
    if (isBinary) return;
    for (const other of members) if (other !== socket) other.send(data.toString());
  });
  socket.on('close', () => {
    members.splice(members.indexOf(socket), 1);
    if (members.length === 0) rooms.delete(room);
  });
});
server.on('listening', () => console.log(`node relay on ${port}`));
