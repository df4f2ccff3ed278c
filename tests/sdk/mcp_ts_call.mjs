// The official MCP TypeScript SDK's client making tool calls, for tests/mcp_agent_loop.rs.
// Usage: node mcp_ts_call.mjs URL AGENT SESSION CALLS_JSON   (CALLS_JSON: [[tool, arguments], ...])
// Prints one JSON object: the tools listed and, per call, what it returned (is_error, text) or
// raised (raised, code, message), with the seconds it took.
import { createRequire } from "node:module";
import path from "node:path";

const dir = process.env.MCP_SDK_DIR;
const require = createRequire(path.join(dir, "package.json"));
const { Client } = await import(require.resolve("@modelcontextprotocol/sdk/client/index.js"));
const { StreamableHTTPClientTransport } = await import(
  require.resolve("@modelcontextprotocol/sdk/client/streamableHttp.js")
);

const [url, agent, session, callsJson] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { "x-session-id": session, "x-agent-name": agent } },
});
const client = new Client({ name: "tokenwarden-ts-test", version: "1.0.0" });
await client.connect(transport);
const out = { calls: [] };
out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
for (const [name, args] of JSON.parse(callsJson)) {
  const started = performance.now();
  let r;
  try {
    const res = await client.callTool({ name, arguments: args });
    r = { is_error: !!res.isError, text: res.content.map((c) => c.text).join(" ") };
  } catch (e) {
    r = { raised: true, code: e.code ?? null, message: String(e.message) };
  }
  r.seconds = (performance.now() - started) / 1000;
  out.calls.push(r);
}
await transport.terminateSession().catch(() => {});
await client.close();
console.log(JSON.stringify(out));
