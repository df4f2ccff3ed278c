"""An MCP server on streamable HTTP built with the official MCP Python SDK (`mcp`, MCPServer —
FastMCP's name in mcp 2), for tests/mcp_proxy.rs.

Usage: mcp_server.py json|sse [stateless]
Binds 127.0.0.1:0, prints `{"port": N}` on one line, then serves until killed. Tools: `add`
(two integers), `delete_all` (what a denied tool would reach), `fail` (raises: an `isError`
result), `slow` (answers after a delay, with a progress notification first). GET /calls lists
the tool calls the server executed, so tests can show a refused call never reached it. An
in-memory event store makes streams resumable with Last-Event-ID (SSE mode).
"""

import asyncio
import json
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventStore
from starlette.requests import Request
from starlette.responses import JSONResponse

mode = sys.argv[1]
stateless = len(sys.argv) > 2 and sys.argv[2] == "stateless"
executed: list[dict] = []


class MemoryEventStore(EventStore):
    """Every event kept, replayed after an id for the same stream."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    async def store_event(self, stream_id, message):
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        stream = next((s for i, s, _ in self.events if i == last_event_id), None)
        if stream is None:
            return None
        after = False
        for event_id, s, message in self.events:
            if after and s == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
            if event_id == last_event_id:
                after = True
        return stream


from mcp.server.streamable_http import EventMessage  # noqa: E402

server = MCPServer("tokenwarden-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    executed.append({"tool": "add", "args": {"a": a, "b": b}})
    return a + b


@server.tool()
def delete_all(table: str) -> str:
    """Delete every row of a table."""
    executed.append({"tool": "delete_all", "args": {"table": table}})
    return f"deleted {table}"


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    executed.append({"tool": "fail", "args": {"reason": reason}})
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
async def slow(ms: int, ctx: Context) -> str:
    """Answers after `ms` milliseconds, reporting progress first."""
    executed.append({"tool": "slow", "args": {"ms": ms}})
    await ctx.report_progress(1, 2)
    await asyncio.sleep(ms / 1000)
    return "done"


@server.custom_route("/calls", methods=["GET"])
async def calls(_: Request) -> JSONResponse:
    return JSONResponse(executed)


app = server.streamable_http_app(
    json_response=(mode == "json"),
    stateless_http=stateless,
    event_store=None if mode == "json" else MemoryEventStore(),
)

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(128)  # connections queue from now on: the port is usable once printed
print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
config = uvicorn.Config(app, log_level="warning")
uvicorn.Server(config).run(sockets=[sock])
