"""A supervisor agent handing off to a worker agent (OpenAI Agents SDK) through tokenwarden, with
OpenTelemetry trace propagation on, as a deployment instruments an agent: the OpenTelemetry Python
SDK as the tracer provider, the agent's work under one active span, and the OpenTelemetry
propagators (W3C `traceparent` and `baggage`, the default) writing the active context into every
request the OpenAI client sends — from a request hook on its HTTP client, since the OpenAI SDK's
transport (`httpx2`) is not the `httpx` that opentelemetry-instrumentation-httpx patches. Every
LLM call then carries a `traceparent` of that one trace, and tokenwarden counts them as one task
(its id: the trace id).

Usage: task_handoff.py RUN BASE_URL
  RUN       ends the agents' names and sessions (tests in one process share metrics)

The supervisor and the worker are different agents (`x-agent-name`) in different sessions
(`x-session-id`), each with its own OpenAI client, as they would be in different processes. Every
call sends `x-mock-script: agent-loop`: the mock answers the supervisor with a call to the one tool
it declares (the SDK's handoff tool, `transfer_to_worker_RUN`) and the worker, whose conversation
ends with the handoff's result, with the final text. Prints one JSON object: the trace id, the
agent that answered last, the final answer, the usage the SDK summed, and what the run raised.
"""
import asyncio
import json
import sys
import warnings

warnings.filterwarnings("ignore")  # deprecation notices of the pinned versions are not results


async def main(run, base):
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())

    from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    set_tracing_disabled(True)  # the SDK's own traces go to the OpenAI platform: not from a test

    async def propagate_context(request):
        # The context active when the call is made: the task's span, whichever agent calls.
        propagate.inject(request.headers)

    def model(agent, session):
        headers = {"x-mock-script": "agent-loop", "x-agent-name": agent, "x-session-id": session}
        http = DefaultAsyncHttpxClient(event_hooks={"request": [propagate_context]})
        client = AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-task-test", default_headers=headers,
                             http_client=http)
        return OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)

    worker = Agent(name=f"worker_{run}", instructions="Answer the question.",
                   model=model(f"worker-{run}", f"worker-{run}"))
    supervisor = Agent(name=f"supervisor_{run}", instructions="Hand the question to the worker.",
                       model=model(f"supervisor-{run}", f"supervisor-{run}"), handoffs=[worker])

    out = {"trace_id": None, "last_agent": None, "final": None, "usage": None, "error": None}
    tracer = trace.get_tracer("tokenwarden-task-test")
    with tracer.start_as_current_span("answer-question") as span:
        out["trace_id"] = format(span.get_span_context().trace_id, "032x")
        try:
            result = await Runner.run(supervisor, "What is the weather?")
            out["last_agent"] = result.last_agent.name
            out["final"] = result.final_output
            u = result.context_wrapper.usage
            out["usage"] = {"input": u.input_tokens, "output": u.output_tokens,
                            "requests": u.requests}
        except Exception as e:  # an error is a result here
            out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
