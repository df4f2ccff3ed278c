"""The official MCP Python SDK's client as an agent, for tests/mcp_proxy.rs.

Usage: mcp_client.py URL MODE SESSION AGENT [TRACEPARENT]
MODE is `legacy` (the initialize handshake, Mcp-Session-Id) or `auto` (the SDK's default: it
probes `server/discover` and falls back to the handshake). The agent's session and name go in
`x-session-id` / `x-agent-name` on every request; TRACEPARENT, when given, goes in the
`params._meta` of the first tools/call. Prints one JSON object: the tools listed, and what each
call returned or raised.
"""

import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def outcome(result):
    text = " ".join(getattr(c, "text", "") for c in result.content)
    # mcp 2 names the fields in snake case; mcp 1 used the wire's camel case.
    is_error = getattr(result, "is_error", None)
    if is_error is None:
        is_error = getattr(result, "isError", False)
    return {"is_error": bool(is_error), "text": text}


async def call(client, name, args, meta=None):
    try:
        return outcome(await client.call_tool(name, args, meta=meta))
    except Exception as e:  # the SDK raises on JSON-RPC errors
        err = getattr(e, "error", None)
        return {"raised": type(e).__name__, "message": str(e), "code": getattr(err, "code", None),
                "data": getattr(err, "data", None)}


async def main():
    url, mode, session, agent = sys.argv[1:5]
    traceparent = sys.argv[5] if len(sys.argv) > 5 else None
    headers = {"x-session-id": session, "x-agent-name": agent}
    out = {}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            out["protocol_version"] = client.protocol_version
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            meta = {"traceparent": traceparent} if traceparent else None
            out["add"] = await call(client, "add", {"a": 2, "b": 3}, meta)
            out["fail"] = await call(client, "fail", {"reason": "test"})
            out["delete_all"] = await call(client, "delete_all", {"table": "users"})
            out["add_invalid"] = await call(client, "add", {"a": "two", "b": 3})
            out["slow"] = await call(client, "slow", {"ms": 50})
    print(json.dumps(out))


asyncio.run(main())
