"""Budgets seen by the official OpenAI, Anthropic and Google GenAI Python SDKs, through tokenwarden.

Usage: budget_clients.py refusal|refusal_429|cut BASE_URL
Prints one JSON line of what the SDKs saw; exits non-zero (with the reason) on any mismatch.
tests/budget_sdks.rs starts the mock provider and the proxy (with budgets) and runs this.
"""
import json
import sys


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}", file=sys.stderr)
        sys.exit(1)


def refusal_calls(base, tag, expect_status):
    """One client call per SDK in session `<sdk>-<tag>` after a first call spent the limit; every
    SDK at its default retries (google-genai with retries turned on). Returns what each raised."""
    import anthropic
    import openai
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types

    out = {}

    def headers(sdk):
        s = f"sdk-{tag}-{sdk}"
        return {"x-session-id": s, "x-agent-name": s, "x-mock-input-tokens": "200",
                "x-mock-output-chunks": "8"}

    def budget_message(msg):
        check("budget exceeded" in msg and "this call needs" in msg, f"message {msg!r}")

    def refused(name, call, error_class):
        """The first call spends the limit; the second must raise `error_class` (returned)."""
        call()
        try:
            call()
        except error_class as e:
            out[name] = type(e).__name__
            return e
        check(False, f"{name}: the refusal did not raise")

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-sdk-test")
    e = refused("openai", lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        extra_headers=headers("oai")), openai.APIStatusError)
    check(e.status_code == expect_status, f"openai status {e.status_code}")
    check(e.code == "session_token_budget_exceeded", f"code {e.code}")
    check(e.type == "budget_exceeded", f"type {e.type}")
    budget_message(e.message)

    aclient = anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="sk-ant-test")
    e = refused("anthropic", lambda: aclient.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
        extra_headers=headers("anth")), anthropic.APIStatusError)
    check(e.status_code == expect_status, f"anthropic status {e.status_code}")
    want = "billing_error" if expect_status == 402 else "rate_limit_error"
    check(e.body["error"]["type"] == want, f"anthropic body {e.body}")
    budget_message(e.body["error"]["message"])

    # google-genai retries only when asked to: 3 attempts, on its default statuses (429 among them).
    g = genai.Client(api_key="AIza-sdk", http_options=types.HttpOptions(
        base_url=f"{base}/gemini", headers=headers("gem"),
        retry_options=types.HttpRetryOptions(attempts=3, initial_delay=0.1, max_delay=0.5)))
    e = refused("gemini", lambda: g.models.generate_content(model="gemini-2.5-flash", contents="hi"),
                genai_errors.APIError)
    check(e.code == expect_status, f"google-genai code {e.code}")
    budget_message(e.message or "")
    return out


def run_refusal(base):
    return refusal_calls(base, "refusal", 402)


def run_refusal_429(base):
    return refusal_calls(base, "refusal429", 429)


def run_cut(base):
    import anthropic
    import openai

    out = {}
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-sdk-test", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"x-session-id": "sdk-cut-oai", "x-mock-output-chunks": "400"})
    text, finish = "", None
    for chunk in stream:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
    check(finish == "length", f"openai finish_reason {finish}")
    check(text, "openai: no text before the cut")
    out["openai_finish_reason"] = finish
    out["openai_chars"] = len(text)

    aclient = anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="sk-ant-test", max_retries=0)
    with aclient.messages.stream(
            model="claude-sonnet-4-5", max_tokens=1024, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-session-id": "sdk-cut-anth", "x-mock-output-chunks": "400"}) as s:
        atext = "".join(s.text_stream)
        msg = s.get_final_message()
    check(msg.stop_reason == "max_tokens", f"anthropic stop_reason {msg.stop_reason}")
    check(atext, "anthropic: no text before the cut")
    out["anthropic_stop_reason"] = msg.stop_reason
    out["anthropic_chars"] = len(atext)
    return out


if __name__ == "__main__":
    which, base = sys.argv[1], sys.argv[2].rstrip("/")
    result = {"refusal": run_refusal, "refusal_429": run_refusal_429, "cut": run_cut}[which](base)
    print(json.dumps(result))
