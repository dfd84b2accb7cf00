// A minimal HTTP server on Node's standard library: every request gets a line naming the instance.
"use strict";
const http = require("node:http");

const port = Number(process.argv[2] ?? process.env.PORT ?? 5000);
const dyno = process.env.DYNO ?? "web";
const greeting = process.env.GREETING ?? "hello";

const server = http.createServer((request, response) => {
  response.writeHead(200, { "Content-Type": "text/plain" });
  response.end(`${greeting} from node ${dyno} (pid ${process.pid})\n`);
  console.log(`${dyno}: ${request.method} ${request.url}`);
});

server.listen(port, "127.0.0.1", () => {
  console.log(`${dyno}: listening on 127.0.0.1:${port}`);
});

// pazuzu stops an instance with SIGTERM: answer the requests in flight, then exit.
process.on("SIGTERM", () => {
  console.log(`${dyno}: stopping`);
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
