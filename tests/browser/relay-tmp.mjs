import http from 'node:http'; import fs from 'node:fs'; import { WebSocketServer } from 'ws';
const dir = '/work/main/src/http/assets/';
const types = {'/':'text/html','/app.js':'text/javascript','/style.css':'text/css'};
const server = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x'); const t = types[u.pathname];
  if (!t) { res.writeHead(404); return res.end(); }
  res.writeHead(200, {'content-type': t}); res.end(fs.readFileSync(dir + (u.pathname === '/' ? 'index.html' : u.pathname.slice(1))));
});
const wss = new WebSocketServer({ server, path: '/ws' }); const rooms = new Map();
wss.on('connection', (ws, req) => {
  const room = new URL(req.url, 'http://x').searchParams.get('room') || 'viewer';
  const members = rooms.get(room) || []; if (members.length >= 2) { ws.send(JSON.stringify({error:{code:'room_full',message:'room full'}})); return ws.close(); }
  members.push(ws); rooms.set(room, members);
  ws.send(JSON.stringify({hello:{version:1,server:'relay-tmp',mode:'room',viewers:members.length,max_viewers:2}}));
  ws.on('message', (d) => { for (const m of members) if (m !== ws) m.send(d.toString()); });
  ws.on('close', () => members.splice(members.indexOf(ws), 1));
});
server.listen(8766, '127.0.0.1');
