#!/bin/sh
# Mock agent traffic for the compose stack: runs inside the sidecar's network namespace and
# calls the proxy on 127.0.0.1:8080 as an agent would, forever, one call a second.
i=0
while true; do
  i=$((i + 1))
  session="demo-$((i / 10))"
  case $((i % 2)) in
    0) agent=support_bot ;;
    *) agent=research_bot ;;
  esac
  extra=""
  [ $((i % 7)) -eq 0 ] && extra="-H x-mock-tool-calls:2"
  [ $((i % 50)) -eq 0 ] && extra="-H x-mock-fault:500"
  if [ $((i % 3)) -eq 0 ]; then
    # Anthropic Messages, streamed.
    # shellcheck disable=SC2086
    curl -sS -o /dev/null -w "anthropic $agent %{http_code}\n" $extra \
      "$ANTHROPIC_BASE_URL/v1/messages" \
      -H "x-api-key: $OPENAI_API_KEY" -H 'anthropic-version: 2023-06-01' \
      -H 'content-type: application/json' \
      -H "x-agent-name: $agent" -H "x-session-id: $session" \
      -d '{"model":"claude-sonnet-4-5","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"hi"}]}' || true
  else
    # OpenAI Chat Completions, streamed (tokenwarden asks the upstream for usage).
    # shellcheck disable=SC2086
    curl -sS -o /dev/null -w "openai $agent %{http_code}\n" $extra \
      "$OPENAI_BASE_URL/chat/completions" \
      -H "Authorization: Bearer $OPENAI_API_KEY" -H 'content-type: application/json' \
      -H "x-agent-name: $agent" -H "x-session-id: $session" \
      -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}' || true
  fi
  sleep 1
done
