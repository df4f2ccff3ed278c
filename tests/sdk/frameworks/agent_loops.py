"""Agent frameworks running real tool loops through tokenwarden to the mock provider.

Usage: agent_loops.py FRAMEWORK MODE RUN BASE_URL
  FRAMEWORK  openai-agents | langgraph | pydantic-ai
  MODE       pass      the agent's tool is `get_weather`; nothing is violated
             approval  the tool is `send_email`, which the proxy's config requires approval for
             invalid   `get_weather` again, with `x-mock-truncate-tool-args: 1` (arguments that are
                       not JSON; the mock truncates them in OpenAI chat and Anthropic streams only,
                       so only those cases run)
  RUN        ends each case's tag, e.g. `oa-streamed-RUN` (tests in one process share metrics)

Every case sends `x-mock-script: agent-loop` (the mock answers with a call to the declared tool,
then, once the request carries its result, with the final text), and `x-agent-name` and
`x-session-id` (both the case's tag, e.g. `oa-run-RUN`) through the framework's default-headers
option. Prints one JSON object: per tag, the arguments each tool run got (`tool_runs`), the final
answer (`final`), what the run raised (`error`: class chain and message) and the usage the
framework itself summed from the provider's reports (`usage`). tests/agent_frameworks.rs starts
the mock and the proxy, runs this and checks the outcome against the proxy's metrics.
"""
import asyncio
import json
import sys
import warnings

warnings.filterwarnings("ignore")  # deprecation notices of the pinned versions are not results

PREFIX = {"openai-agents": "oa", "langgraph": "lg", "pydantic-ai": "pa"}
TOOL = {"pass": "get_weather", "approval": "send_email", "invalid": "get_weather"}


class Case:
    """One run: its tag, headers, and what its tool function saw."""

    def __init__(self, framework, name, mode, run, base):
        self.tag = f"{PREFIX[framework]}-{name}-{run}"
        self.base = base
        self.headers = {"x-mock-script": "agent-loop", "x-agent-name": self.tag, "x-session-id": self.tag}
        if mode == "invalid":
            self.headers["x-mock-truncate-tool-args"] = "1"
        self.tool_name = TOOL[mode]
        self.tool_runs = []
        self.final = None
        self.usage = None

    def get_weather(self, city: str) -> str:
        """Current weather of a city."""
        self.tool_runs.append({"city": city})
        return f"sunny in {city}"

    def send_email(self, to: str, body: str) -> str:
        """Send an email."""
        self.tool_runs.append({"to": to, "body": body})
        return "sent"

    def tool(self):
        """The case's tool as a plain function with its own name (frameworks read the signature)."""
        return getattr(self, self.tool_name)

    async def run(self, body):
        error = None
        try:
            await body(self)
        except Exception as e:  # every framework error is a result here
            chain, c = [], e
            while c is not None and len(chain) < 5:
                chain.append({"type": f"{type(c).__module__}.{type(c).__name__}", "message": str(c)})
                c = c.__cause__ or c.__context__
            error = {"chain": chain, "message": " | ".join(x["message"] for x in chain)}
        return self.tag, {"tool_runs": self.tool_runs, "final": self.final, "error": error, "usage": self.usage}


# --- OpenAI Agents SDK ---------------------------------------------------------------------

def openai_agents_cases(mode):
    from agents import (Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner,
                        function_tool, set_tracing_disabled)
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace export to the OpenAI platform from a test

    def agent(case, chat):
        client = AsyncOpenAI(base_url=f"{case.base}/v1", api_key="sk-fw-test", default_headers=case.headers)
        model = (OpenAIChatCompletionsModel if chat else OpenAIResponsesModel)(
            model="gpt-4o-mini", openai_client=client)
        return Agent(name="assistant", instructions="Use the tool, then answer.", model=model,
                     tools=[function_tool(case.tool())])

    def usage_of(case, result):
        u = result.context_wrapper.usage
        case.usage = {"input": u.input_tokens, "output": u.output_tokens, "requests": u.requests}

    async def run(case):
        result = await Runner.run(agent(case, chat=False), "What is the weather? Use the tool.")
        case.final = result.final_output
        usage_of(case, result)

    def streamed(chat):
        async def body(case):
            result = Runner.run_streamed(agent(case, chat), "What is the weather? Use the tool.")
            async for _ in result.stream_events():
                pass
            case.final = result.final_output
            usage_of(case, result)
        return body

    if mode == "invalid":  # the mock truncates arguments in chat streams, not in Responses
        return [("chat-streamed", streamed(chat=True))]
    return [("run", run), ("streamed", streamed(chat=False))]


# --- LangGraph ------------------------------------------------------------------------------

def langgraph_cases(mode):
    from langchain_anthropic import ChatAnthropic
    from langchain_core.tools import StructuredTool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    def model(case, provider, streaming):
        if provider == "openai":
            # stream_usage: the SDK's include_usage, so the run's own usage can be compared.
            return ChatOpenAI(model="gpt-4o-mini", base_url=f"{case.base}/v1", api_key="sk-fw-test",
                              default_headers=case.headers, streaming=streaming, stream_usage=True)
        return ChatAnthropic(model="claude-sonnet-4-5", base_url=f"{case.base}/anthropic",
                             api_key="sk-ant-fw-test", default_headers=case.headers,
                             streaming=streaming, max_tokens=256)

    def body(provider, streaming):
        async def run(case):
            graph = create_react_agent(model(case, provider, streaming),
                                       [StructuredTool.from_function(case.tool())])
            state = await graph.ainvoke({"messages": [("user", "What is the weather? Use the tool.")]})
            msgs = state["messages"]
            case.final = str(msgs[-1].text)  # the text blocks of the content, joined
            metas = [m.usage_metadata for m in msgs if getattr(m, "usage_metadata", None)]
            case.usage = {"input": sum(m["input_tokens"] for m in metas),
                          "output": sum(m["output_tokens"] for m in metas), "requests": len(metas)}
        return run

    streams = [("openai-stream", body("openai", True)), ("anthropic-stream", body("anthropic", True))]
    if mode == "invalid":
        return streams
    return streams + [("openai-json", body("openai", False)), ("anthropic-json", body("anthropic", False))]


# --- pydantic-ai ----------------------------------------------------------------------------

def pydantic_ai_cases(mode):
    import anthropic
    from openai import AsyncOpenAI
    from pydantic_ai import Agent, Tool
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.anthropic import AnthropicProvider
    from pydantic_ai.providers.openai import OpenAIProvider

    def agent(case, provider):
        if provider == "openai":
            client = AsyncOpenAI(base_url=f"{case.base}/v1", api_key="sk-fw-test", default_headers=case.headers)
            model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
        else:
            client = anthropic.AsyncAnthropic(base_url=f"{case.base}/anthropic", api_key="sk-ant-fw-test",
                                              default_headers=case.headers)
            model = AnthropicModel("claude-sonnet-4-5", provider=AnthropicProvider(anthropic_client=client))
        # max_tokens within the Anthropic SDK's non-streaming limit: with its default pydantic-ai
        # streams even a non-streamed `run` (to stay under the SDK's 10-minute rule).
        return Agent(model, instructions="Use the tool, then answer.", tools=[Tool(case.tool())],
                     model_settings={"max_tokens": 1024})

    def usage_of(case, u):
        case.usage = {"input": u.input_tokens, "output": u.output_tokens, "requests": u.requests}

    def run(provider):
        async def body(case):
            result = await agent(case, provider).run("What is the weather? Use the tool.")
            case.final = result.output
            usage_of(case, result.usage())
        return body

    def streamed(provider):
        async def body(case):
            async with agent(case, provider).run_stream("What is the weather? Use the tool.") as result:
                case.final = await result.get_output()
            usage_of(case, result.usage())
        return body

    streams = [("openai-stream", streamed("openai")), ("anthropic-stream", streamed("anthropic"))]
    if mode == "invalid":
        return streams
    return streams + [("openai-run", run("openai")), ("anthropic-run", run("anthropic"))]


INSTALL = ("scripts/test.sh installs them into .venv-sdk: openai-agents, langgraph, langchain-openai, "
           "langchain-anthropic and pydantic-ai-slim[openai,anthropic], pinned there")


async def main(framework, mode, run, base):
    build = {"openai-agents": openai_agents_cases, "langgraph": langgraph_cases,
             "pydantic-ai": pydantic_ai_cases}[framework]
    try:
        cases = build(mode)
    except ModuleNotFoundError as e:
        sys.exit(f"agent_loops.py: {framework} is not installed in {sys.executable} ({e}); {INSTALL}")
    runs = [Case(framework, name, mode, run, base).run(body) for name, body in cases]
    return dict(await asyncio.gather(*runs))


if __name__ == "__main__":
    framework, mode, run, base = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].rstrip("/")
    print(json.dumps(asyncio.run(main(framework, mode, run, base))))
