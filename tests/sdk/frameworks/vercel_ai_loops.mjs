// The Vercel AI SDK (`ai` with `@ai-sdk/openai` and `@ai-sdk/anthropic`) running real tool loops
// through tokenwarden to the mock provider: `streamText` and `generateText` with a tool and
// several steps (stopWhen: stepCountIs(5)).
//
// Usage: node vercel_ai_loops.mjs MODE RUN BASE_URL — MODE and RUN as in agent_loops.py beside this file
// (pass: tool `get_weather`; approval: tool `send_email`; invalid: `get_weather` with arguments
// the mock truncates, OpenAI chat and Anthropic streams only). The packages come from
// $AI_SDK_DIR (scripts/test.sh installs them, pinned, into .tools/ai-sdk). Every case sends
// `x-mock-script: agent-loop`, `x-agent-name` and `x-session-id` (the case's tag, e.g.
// `ai-stream-anthropic-RUN`) through the provider's `headers` option. Prints one JSON object,
// per tag: `tool_runs`, `final`, `error` ({chain, message}: what the run threw, or the error parts
// a stream carried), `usage` (the SDK's totalUsage) and `finish` (the last step's finish reason).
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.AI_SDK_DIR, "package.json"));
const { generateText, streamText, tool, jsonSchema, stepCountIs } = require("ai");
const { createOpenAI } = require("@ai-sdk/openai");
const { createAnthropic } = require("@ai-sdk/anthropic");

const [mode, run, base] = process.argv.slice(2);

function makeCase(name) {
  const tag = `ai-${name}-${run}`;
  const headers = { "x-mock-script": "agent-loop", "x-agent-name": tag, "x-session-id": tag };
  if (mode === "invalid") headers["x-mock-truncate-tool-args"] = "1";
  const c = { tag, headers, tool_runs: [], final: null, error: null, usage: null, finish: null };
  const string = { type: "string" };
  c.tools = mode === "approval"
    ? {
      send_email: tool({
        description: "Send an email.",
        inputSchema: jsonSchema({ type: "object", properties: { to: string, body: string }, required: ["to", "body"] }),
        execute: async (args) => { c.tool_runs.push(args); return "sent"; },
      }),
    }
    : {
      get_weather: tool({
        description: "Current weather of a city.",
        inputSchema: jsonSchema({ type: "object", properties: { city: string }, required: ["city"] }),
        execute: async (args) => { c.tool_runs.push(args); return `sunny in ${args.city}`; },
      }),
    };
  return c;
}

function describe(errors) {
  const chain = errors.map((e) => ({
    type: e?.constructor?.name ?? typeof e,
    // Stream error parts carry the provider's error object as it was sent (no Error class).
    message: String(e?.message ?? JSON.stringify(e)),
  }));
  return { chain, message: chain.map((x) => x.message).join(" | ") };
}

function model(c, provider) {
  if (provider === "anthropic") {
    // The Anthropic provider appends /messages to its base URL: it needs the /v1.
    return createAnthropic({ baseURL: `${base}/anthropic/v1`, apiKey: "sk-ant-fw-test", headers: c.headers })("claude-sonnet-4-5");
  }
  const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey: "sk-fw-test", headers: c.headers });
  return provider === "openai-responses" ? openai.responses("gpt-4o-mini") : openai.chat("gpt-4o-mini");
}

const prompt = "What is the weather? Use the tool.";

async function stream(c, provider) {
  const errors = [];
  const result = streamText({
    model: model(c, provider), prompt, tools: c.tools, stopWhen: stepCountIs(5),
    onError: ({ error }) => errors.push(error),
  });
  // streamText never throws for a failed stream: the failure is an error part (and onError);
  // then `text` rejects (NoOutputGeneratedError) when no step finished.
  try {
    for await (const part of result.fullStream) {
      if (part.type === "finish") c.finish = part.finishReason;
    }
    c.final = await result.text;
    const u = await result.totalUsage;
    c.usage = { input: u.inputTokens, output: u.outputTokens, requests: (await result.steps).length };
  } finally {
    if (errors.length) c.error = describe(errors);
  }
}

async function generate(c, provider) {
  const result = await generateText({ model: model(c, provider), prompt, tools: c.tools, stopWhen: stepCountIs(5) });
  c.final = result.text;
  c.finish = result.finishReason;
  const u = result.totalUsage;
  c.usage = { input: u.inputTokens, output: u.outputTokens, requests: result.steps.length };
}

const cases = [
  ["stream-openai-chat", stream, "openai-chat"],
  ["stream-anthropic", stream, "anthropic"],
];
if (mode !== "invalid") {
  cases.push(
    ["stream-openai-responses", stream, "openai-responses"],
    ["generate-openai-chat", generate, "openai-chat"],
    ["generate-anthropic", generate, "anthropic"],
  );
}

const out = {};
await Promise.all(cases.map(async ([name, run, provider]) => {
  const c = makeCase(name);
  try {
    await run(c, provider);
  } catch (e) {
    const chain = [e];
    while (chain.length < 5 && chain.at(-1)?.cause) chain.push(chain.at(-1).cause);
    c.error ??= describe(chain);
  }
  out[c.tag] = { tool_runs: c.tool_runs, final: c.final, error: c.error, usage: c.usage, finish: c.finish };
}));
console.log(JSON.stringify(out));
