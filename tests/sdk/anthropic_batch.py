"""The Anthropic Python SDK's `messages.batches.results()` through tokenwarden.

Usage: anthropic_batch.py BASE_URL BATCH_ID
The SDK retrieves the batch, then downloads its `results_url` (an absolute URL). Prints one JSON
line: how many result lines the SDK read and how many succeeded; exits non-zero on any error.
"""
import json
import sys

import anthropic

base, batch_id = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key="sk-ant-sdk-test", max_retries=0, timeout=10)
lines = succeeded = 0
for r in client.messages.batches.results(batch_id):
    lines += 1
    succeeded += r.result.type == "succeeded"
print(json.dumps({"lines": lines, "succeeded": succeeded}))
