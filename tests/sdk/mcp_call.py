"""The official MCP Python SDK's client making tool calls, for tests/mcp_agent_loop.rs.

Usage: mcp_call.py URL AGENT SESSION CALLS_JSON
CALLS_JSON is a list of [tool, arguments]. Connects once (the initialize handshake), lists the
tools, makes each call in order and prints one JSON object: the tools listed and, per call, what
it returned (`is_error`, `text`) or raised (`raised`, `code`, `data`), with the seconds it took.
"""

import asyncio
import json
import sys
import time

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def call(client, name, args):
    started = time.monotonic()
    try:
        r = await client.call_tool(name, args)
        text = " ".join(getattr(c, "text", "") for c in r.content)
        is_error = getattr(r, "is_error", None)
        if is_error is None:
            is_error = getattr(r, "isError", False)
        out = {"is_error": bool(is_error), "text": text}
    except Exception as e:  # the SDK raises on JSON-RPC errors
        err = getattr(e, "error", None)
        out = {"raised": type(e).__name__, "message": str(e), "code": getattr(err, "code", None),
               "data": getattr(err, "data", None)}
    out["seconds"] = time.monotonic() - started
    return out


async def main():
    url, agent, session, calls = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    headers = {"x-session-id": session, "x-agent-name": agent}
    out = {"calls": []}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            for name, args in calls:
                out["calls"].append(await call(client, name, args))
    print(json.dumps(out))


asyncio.run(main())
