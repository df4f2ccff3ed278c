// The official MCP TypeScript SDK's client (@modelcontextprotocol/sdk, pinned in scripts/test.sh)
// as an agent, for tests/mcp_proxy.rs. Usage: node mcp_ts_client.mjs URL SESSION AGENT
// Prints one JSON object: the tools listed, what `add` returned, what `delete_all` raised, and
// the session id the transport kept.
import { createRequire } from "node:module";
import path from "node:path";

const dir = process.env.MCP_SDK_DIR;
const require = createRequire(path.join(dir, "package.json"));
const { Client } = await import(require.resolve("@modelcontextprotocol/sdk/client/index.js"));
const { StreamableHTTPClientTransport } = await import(
  require.resolve("@modelcontextprotocol/sdk/client/streamableHttp.js")
);

const [url, session, agent] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { "x-session-id": session, "x-agent-name": agent } },
});
const client = new Client({ name: "tokenwarden-ts-test", version: "1.0.0" });
await client.connect(transport);
const out = { session_id: transport.sessionId ?? null };
out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
const add = await client.callTool({ name: "add", arguments: { a: 2, b: 40 } });
out.add = { is_error: !!add.isError, text: add.content.map((c) => c.text).join(" ") };
try {
  await client.callTool({ name: "delete_all", arguments: { table: "users" } });
  out.delete_all = { raised: false };
} catch (e) {
  out.delete_all = { raised: true, code: e.code ?? null, message: String(e.message) };
}
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));
