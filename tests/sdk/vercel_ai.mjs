// Budgets as the Vercel AI SDK (`ai` + `@ai-sdk/openai` / `@ai-sdk/anthropic`) sees them, through
// tokenwarden, at its default retries (maxRetries 2: it retries 408, 409, 429 and 5xx whatever
// `x-should-retry` says).
//
// Usage: node vercel_ai.mjs TAG BASE_URL — the packages come from $AI_SDK_DIR (scripts/test.sh
// installs them, pinned, into .tools/ai-sdk). For each provider, a first call of session
// `ai-TAG-<provider>` spends the limit and a second is refused; prints one JSON line of what the
// second raised. tests/budget_sdks.rs counts the refusals that reached the proxy.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.AI_SDK_DIR, "package.json"));
const { generateText } = require("ai");
const { createOpenAI } = require("@ai-sdk/openai");
const { createAnthropic } = require("@ai-sdk/anthropic");

const [tag, base] = process.argv.slice(2);
const models = {
  openai: createOpenAI({ baseURL: `${base}/v1`, apiKey: "sk-ai-test" }).chat("gpt-4o-mini"),
  // The Anthropic provider appends /messages to its base URL: it needs the /v1.
  anthropic: createAnthropic({ baseURL: `${base}/anthropic/v1`, apiKey: "sk-ant-ai-test" })("claude-sonnet-4-5"),
};
const out = {};
// Both providers at once: the 429 case waits out the SDK's backoff (2 s, then 4 s) only once.
await Promise.all(Object.entries(models).map(async ([name, model]) => {
  const session = `ai-${tag}-${name}`;
  const headers = { "x-session-id": session, "x-agent-name": session, "x-mock-input-tokens": "200", "x-mock-output-chunks": "8" };
  await generateText({ model, prompt: "hi", headers });
  try {
    await generateText({ model, prompt: "hi", headers });
    out[name] = { error: null };
  } catch (e) {
    // After retries the SDK throws a RetryError wrapping the last APICallError.
    const last = e.lastError ?? e;
    out[name] = {
      error: e.constructor.name,
      status: last.statusCode ?? null,
      names_budget: String(last.message).includes("budget exceeded"),
    };
  }
}));
console.log(JSON.stringify(out));
