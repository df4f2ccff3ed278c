"""End-to-end checks with the official OpenAI and Anthropic Python SDKs, through tokenwarden.

Usage: sdk_clients.py openai|anthropic|accounting BASE_URL
Prints one JSON line of what the SDK saw; exits non-zero (with the reason) on any mismatch.
The Rust test tests/python_sdks.rs starts the mock provider and the proxy and runs this.
"""
import json
import sys


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}", file=sys.stderr)
        sys.exit(1)


def run_openai(base):
    import openai

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-sdk-test", max_retries=0)
    out = {}

    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-output-chunks": "5", "x-mock-input-tokens": "11"},
    )
    check(r.choices[0].message.content, "chat: empty content")
    check(r.usage.prompt_tokens == 11, f"chat: prompt_tokens {r.usage.prompt_tokens}")
    check(r.usage.completion_tokens == 5, f"chat: completion_tokens {r.usage.completion_tokens}")
    out["chat"] = r.usage.total_tokens

    text, usage = "", None
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-output-chunks": "7"},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    check(text, "chat stream: no text")
    check(usage is not None and usage.completion_tokens == 7, f"chat stream usage {usage}")
    out["chat_stream_chars"] = len(text)

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather?"}],
        stream=True,
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        extra_headers={"x-mock-tool-calls": "2"},
    )
    calls = {}
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            c = calls.setdefault(tc.index, {"name": "", "args": ""})
            if tc.function and tc.function.name:
                c["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                c["args"] += tc.function.arguments
    check(len(calls) == 2, f"tool calls: {calls}")
    for c in calls.values():
        json.loads(c["args"])  # fragments reassemble into valid JSON
    out["tool_calls"] = sorted(c["name"] for c in calls.values())

    events = [e.type for e in client.responses.create(model="gpt-4.1", input="hi", stream=True)]
    check("response.completed" in events, f"responses stream events {events}")
    out["responses_events"] = len(events)

    emb = client.embeddings.create(model="text-embedding-3-small", input="hi")
    check(len(emb.data) == 1 and emb.data[0].embedding, "embeddings")

    try:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-fault": "429"},
        )
        check(False, "429 did not raise")
    except openai.RateLimitError as e:
        out["rate_limit_status"] = e.status_code
    print(json.dumps(out))


def run_anthropic(base):
    import anthropic

    client = anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="sk-ant-sdk-test", max_retries=0)
    out = {}
    m = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-output-chunks": "6", "x-mock-input-tokens": "9"},
    )
    check(m.content and m.content[0].type == "text", f"messages content {m.content}")
    check(m.usage.input_tokens == 9, f"input_tokens {m.usage.input_tokens}")
    check(m.usage.output_tokens == 6, f"output_tokens {m.usage.output_tokens}")
    out["messages"] = m.usage.output_tokens

    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        extra_headers={"x-mock-tool-calls": "2", "x-mock-output-chunks": "4"},
    ) as stream:
        final = stream.get_final_message()
    tools = [b for b in final.content if b.type == "tool_use"]
    check(len(tools) == 2, f"tool_use blocks {final.content}")
    check(all(isinstance(t.input, dict) for t in tools), "tool inputs parse")
    check(final.stop_reason == "tool_use", f"stop_reason {final.stop_reason}")
    out["stream_tool_uses"] = len(tools)

    try:
        client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-fault": "500"},
        )
        check(False, "500 did not raise")
    except anthropic.InternalServerError as e:
        out["server_error_status"] = e.status_code
    print(json.dumps(out))


KNOBS = {"x-mock-input-tokens": "23", "x-mock-output-chunks": "7"}


def h(agent, **extra):
    return {"x-agent-name": agent, **KNOBS, **extra}


def run_accounting(base):
    """One call per case, each under its own agent name, for the Rust side to check metrics."""
    import anthropic
    import openai
    from google import genai
    from google.genai import types

    oai = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-sdk", max_retries=0)
    msgs = [{"role": "user", "content": "hi"}]
    oai.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_headers=h("sdk-chat-json"))
    for _ in oai.chat.completions.create(
        model="gpt-4o-mini", messages=msgs, stream=True,
        stream_options={"include_usage": True}, extra_headers=h("sdk-chat-stream-usage"),
    ):
        pass
    saw_usage = False
    for chunk in oai.chat.completions.create(
        model="gpt-4o-mini", messages=msgs, stream=True, extra_headers=h("sdk-chat-stream-nousage"),
    ):
        extra = chunk.model_extra or {}
        saw_usage |= chunk.usage is not None or "usage" in extra or not chunk.choices
    check(not saw_usage, "a client that did not ask for usage saw a usage chunk or field")
    oai.responses.create(model="gpt-4.1", input="hi", extra_headers=h("sdk-resp-json"))
    for _ in oai.responses.create(model="gpt-4.1", input="hi", stream=True, extra_headers=h("sdk-resp-stream")):
        pass
    oai.embeddings.create(model="text-embedding-3-small", input="hi", extra_headers=h("sdk-embeddings"))

    ant = anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="sk-ant-sdk", max_retries=0)
    ant.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=msgs, extra_headers=h("sdk-anth-json"))
    with ant.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=msgs,
                             extra_headers=h("sdk-anth-stream")) as st:
        st.get_final_message()
    with ant.messages.stream(
        model="claude-sonnet-4-5", max_tokens=64, messages=msgs,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        extra_headers=h("sdk-anth-tools", **{"x-mock-tool-calls": "1"}),
    ) as st:
        final = st.get_final_message()
    check(any(b.type == "tool_use" for b in final.content), "tool use block")

    for agent, stream in (("sdk-gemini-json", False), ("sdk-gemini-stream", True)):
        g = genai.Client(api_key="AIza-sdk", http_options=types.HttpOptions(
            base_url=f"{base}/gemini", headers=h(agent)))
        if stream:
            for _ in g.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"):
                pass
        else:
            r = g.models.generate_content(model="gemini-2.5-flash", contents="hi")
            check(r.usage_metadata.prompt_token_count == 23, f"gemini usage {r.usage_metadata}")
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    which, base = sys.argv[1], sys.argv[2]
    {"openai": run_openai, "anthropic": run_anthropic, "accounting": run_accounting}[which](base)
