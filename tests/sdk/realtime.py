"""The official OpenAI Python SDK's Realtime client (`client.realtime.connect`) through tokenwarden.

Usage: realtime.py WS_BASE_URL AGENT
Opens a session (websocket_base_url=WS_BASE_URL), asks for two responses and prints one JSON line
of what the SDK parsed: the session's model, each response.done's usage, the text deltas.
tests/realtime.rs starts a Realtime upstream and the proxy and runs this.
"""
import asyncio
import json
import sys

from openai import AsyncOpenAI


async def main(ws_base, agent):
    client = AsyncOpenAI(api_key="sk-realtime-test", websocket_base_url=ws_base)
    out = {"usage": [], "deltas": 0}
    async with client.realtime.connect(
        model="gpt-realtime",
        extra_headers={"x-agent-name": agent, "x-session-id": agent},
    ) as conn:
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Tallest mountain?"}],
            }
        )
        await conn.response.create()
        async for event in conn:
            if event.type == "session.created":
                out["session_model"] = event.session.model
            elif event.type == "response.output_text.delta":
                out["deltas"] += 1
            elif event.type == "response.done":
                out["usage"].append(event.response.usage.model_dump(exclude_none=True))
                if len(out["usage"]) == 2:
                    break
                await conn.response.create()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 20))
