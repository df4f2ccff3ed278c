"""The OpenAI Agents SDK running a tool loop through tokenwarden on both legs, for
tests/mcp_agent_loop.rs: the model over the OpenAI route (the mock's `agent-loop` script) and the
tools over an MCP route (`MCPServerStreamableHttp`, the SDK's streamable HTTP client).

Usage: mcp_agent_loop.py BASE_URL MCP_URL AGENT SESSION TRACEPARENT
Both legs carry the same `x-agent-name`, `x-session-id` and `traceparent` (the agent's trace):
the OpenAI client as default headers, the MCP server as its transport headers. Prints one JSON
object: the final answer, the tool outputs the model got, the usage the SDK summed, the error
(if the run raised) and the seconds the run took.
"""
import asyncio
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")


async def main():
    base, mcp_url, agent_name, session, traceparent = sys.argv[1:6]
    from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
    from agents.mcp import MCPServerStreamableHttp
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace export to the OpenAI platform from a test
    ids = {"x-agent-name": agent_name, "x-session-id": session, "traceparent": traceparent}
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-mcp-test",
                         default_headers={"x-mock-script": "agent-loop", **ids})
    out = {"error": None, "final": None, "tool_outputs": [], "usage": None}
    started = time.monotonic()
    try:
        async with MCPServerStreamableHttp(params={"url": mcp_url, "headers": ids},
                                           name="tools") as server:
            agent = Agent(name="assistant", instructions="Use the tool, then answer.",
                          model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client),
                          mcp_servers=[server])
            result = await Runner.run(agent, "Do the task. Use the tool.")
            out["final"] = result.final_output
            out["tool_outputs"] = [str(i.output) for i in result.new_items
                                   if i.type == "tool_call_output_item"]
            u = result.context_wrapper.usage
            out["usage"] = {"input": u.input_tokens, "output": u.output_tokens, "requests": u.requests}
    except Exception as e:  # a raised run is a result here
        out["error"] = f"{type(e).__name__}: {e}"
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out))


asyncio.run(main())
