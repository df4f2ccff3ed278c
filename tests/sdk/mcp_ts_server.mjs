// An MCP server built with the official TypeScript SDK (@modelcontextprotocol/sdk: McpServer on
// the streamable HTTP transport, stateful, JSON answers when MODE is `json`, else SSE), for
// tests/mcp_agent_loop.rs. Usage: node mcp_ts_server.mjs json|sse
// Binds 127.0.0.1:0 and prints {"port": N}. Tools: `add` (two integers) and `delete_all` (a
// table). GET /calls lists the tool calls it executed.
import { createRequire } from "node:module";
import http from "node:http";
import path from "node:path";
import { randomUUID } from "node:crypto";

const dir = process.env.MCP_SDK_DIR;
const require = createRequire(path.join(dir, "package.json"));
const { McpServer } = await import(require.resolve("@modelcontextprotocol/sdk/server/mcp.js"));
const { StreamableHTTPServerTransport } = await import(
  require.resolve("@modelcontextprotocol/sdk/server/streamableHttp.js")
);
const { isInitializeRequest } = await import(require.resolve("@modelcontextprotocol/sdk/types.js"));
const { z } = await import(require.resolve("zod"));

const json = process.argv[2] === "json";
const executed = [];
const transports = new Map();

function newServer() {
  const server = new McpServer({ name: "tokenwarden-ts-tools", version: "1.0.0" });
  server.tool("add", "Add two integers.", { a: z.number().int(), b: z.number().int() }, async ({ a, b }) => {
    executed.push({ tool: "add", args: { a, b } });
    return { content: [{ type: "text", text: String(a + b) }] };
  });
  server.tool("delete_all", "Delete every row of a table.", { table: z.string() }, async ({ table }) => {
    executed.push({ tool: "delete_all", args: { table } });
    return { content: [{ type: "text", text: `deleted ${table}` }] };
  });
  return server;
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString("utf8");
  return text ? JSON.parse(text) : undefined;
}

const httpServer = http.createServer(async (req, res) => {
  if (req.method === "GET" && req.url === "/calls") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(executed));
  }
  const sid = req.headers["mcp-session-id"];
  let transport = sid ? transports.get(sid) : undefined;
  const body = req.method === "POST" ? await readJson(req) : undefined;
  if (!transport) {
    if (req.method !== "POST" || !isInitializeRequest(body)) {
      res.writeHead(400, { "content-type": "application/json" });
      return res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "no session" } }));
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: json,
      onsessioninitialized: (id) => transports.set(id, transport),
    });
    transport.onclose = () => transport.sessionId && transports.delete(transport.sessionId);
    await newServer().connect(transport);
  }
  await transport.handleRequest(req, res, body);
});
httpServer.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: httpServer.address().port }));
});
