"""boto3's bedrock-runtime client and the Anthropic SDK's AnthropicVertex client through the proxy.

Usage: bedrock_vertex.py boto3|vertex BASE_URL SIGNED_HOST. Prints JSON: what each client read,
and (boto3) the signed parts of every request as sent, for the Rust side to compare with what the
upstream received.

boto3 signs (SigV4) the Host it connects to unless told otherwise; pointed at a proxy, the
`before-sign` hook below makes it sign the upstream's host, which the proxy sends on, so the
signature holds upstream. The agent name goes on after signing (it is not part of the signature).
"""

import base64
import json
import sys
from urllib.parse import urlsplit


def check(cond, msg):
    if not cond:
        raise SystemExit(f"check failed: {msg}")


def run_boto3(base, signed_host):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError, EventStreamError

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=base,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    sent = []
    extra = {}

    def sign_upstream_host(request, **_):
        request.headers["Host"] = signed_host

    def unsigned_headers(request, **_):
        for k, v in extra.items():
            request.headers[k] = v
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        url = urlsplit(request.url)
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append(
            {
                "path": url.path + (f"?{url.query}" if url.query else ""),
                "headers": headers,
                "body": base64.b64encode(body).decode(),
            }
        )

    client.meta.events.register("before-sign.bedrock-runtime.*", sign_upstream_host)
    client.meta.events.register("before-send.bedrock-runtime.*", unsigned_headers)
    model = "us.anthropic.claude-sonnet-4-20250514-v1:0"
    messages = [{"role": "user", "content": [{"text": "What is the weather in Paris?"}]}]
    out = {}

    extra = {"x-agent-name": "sdk-bd-json"}
    r = client.converse(modelId=model, messages=messages)
    out["converse_usage"] = r["usage"]
    out["converse_tool"] = r["output"]["message"]["content"][1]["toolUse"]["name"]

    extra = {"x-agent-name": "sdk-bd-stream"}
    r = client.converse_stream(modelId=model, messages=messages)
    text, usage = "", None
    for ev in r["stream"]:
        if "contentBlockDelta" in ev:
            text += ev["contentBlockDelta"]["delta"].get("text", "")
        if "metadata" in ev:
            usage = ev["metadata"]["usage"]
    out["stream_text"] = text
    out["stream_usage"] = usage

    extra = {"x-agent-name": "sdk-bi-json"}
    body = json.dumps(
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    )
    haiku = "anthropic.claude-haiku-4-5-20251001-v1:0"
    r = client.invoke_model(modelId=haiku, body=body)
    out["invoke_usage"] = json.loads(r["body"].read())["usage"]

    extra = {"x-agent-name": "sdk-bi-stream"}
    r = client.invoke_model_with_response_stream(modelId=haiku, body=body)
    events = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    out["invoke_stream_types"] = [e["type"] for e in events]
    out["invoke_stream_metrics"] = events[-1]["amazon-bedrock-invocationMetrics"]

    extra = {"x-agent-name": "sdk-bd-error", "x-test-reply": "error"}
    try:
        client.converse(modelId=model, messages=messages)
        out["error"] = None
    except ClientError as e:
        out["error"] = {"status": e.response["ResponseMetadata"]["HTTPStatusCode"], "message": e.response["Error"]["Message"]}

    extra = {"x-agent-name": "sdk-bd-exception", "x-test-reply": "exception"}
    try:
        for _ in client.converse_stream(modelId=model, messages=messages)["stream"]:
            pass
        out["exception"] = None
    except EventStreamError as e:
        out["exception"] = e.response["Error"]["Code"]

    out["sent"] = sent
    return out


def run_vertex(base, _):
    from anthropic import AnthropicVertex

    client = AnthropicVertex(region="us-east5", project_id="p1", access_token="ya29.dummy-token", base_url=f"{base}/v1")
    out = {}
    msg = client.messages.create(
        model="claude-3-opus@20240229",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-agent-name": "sdk-vx-json"},
    )
    out["json_usage"] = {"input": msg.usage.input_tokens, "output": msg.usage.output_tokens}
    with client.messages.stream(
        model="claude-haiku-4-5@20251001",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-agent-name": "sdk-vx-stream"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check(text, "streamed text")
    out["stream_text"] = text
    out["stream_usage"] = {"input": final.usage.input_tokens, "output": final.usage.output_tokens}
    return out


if __name__ == "__main__":
    which, base, host = sys.argv[1], sys.argv[2], sys.argv[3]
    print(json.dumps({"boto3": run_boto3, "vertex": run_vertex}[which](base, host)))
