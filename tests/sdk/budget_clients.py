"""Budgets seen by the official OpenAI and Anthropic Python SDKs, through tokenwarden.

Usage: budget_clients.py refusal|cut BASE_URL
Prints one JSON line of what the SDKs saw; exits non-zero (with the reason) on any mismatch.
tests/budget_sdks.rs starts the mock provider and the proxy (with budgets) and runs this.
"""
import json
import sys


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}", file=sys.stderr)
        sys.exit(1)


def run_refusal(base):
    import anthropic
    import openai

    out = {}
    # Default retries (2): a lifetime refusal carries x-should-retry: false, so the SDK must
    # raise at once instead of retrying.
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-sdk-test")
    headers = {"x-session-id": "sdk-refusal-oai", "x-agent-name": "sdk-refusal-oai",
               "x-mock-input-tokens": "200", "x-mock-output-chunks": "8"}
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    check(r.usage.total_tokens == 208, f"first call usage {r.usage}")
    errors = 0
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    except openai.RateLimitError as e:
        errors += 1
        check(e.status_code == 429, f"status {e.status_code}")
        check(e.code == "session_token_budget_exceeded", f"code {e.code}")
        check(e.type == "budget_exceeded", f"type {e.type}")
    check(errors == 1, f"{errors} RateLimitErrors")
    out["openai_rate_limit_errors"] = errors

    aclient = anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="sk-ant-test")
    headers = {"x-session-id": "sdk-refusal-anth", "x-agent-name": "sdk-refusal-anth",
               "x-mock-input-tokens": "200", "x-mock-output-chunks": "8"}
    aclient.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                            messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    errors = 0
    try:
        aclient.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    except anthropic.RateLimitError as e:
        errors += 1
        check(e.status_code == 429, f"anthropic status {e.status_code}")
        check(e.body["error"]["type"] == "rate_limit_error", f"anthropic body {e.body}")
    check(errors == 1, f"{errors} anthropic RateLimitErrors")
    out["anthropic_rate_limit_errors"] = errors
    return out


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
    result = {"refusal": run_refusal, "cut": run_cut}[which](base)
    print(json.dumps(result))
