-- wrk script for bench/soak.sh: a mix of agent traffic with faults. Each request picks, by a
-- counter (not randomness, so runs repeat): streaming or not, a session out of 500, an agent out
-- of 8, and sometimes a fault the mock injects (a dropped stream, a 500, a 429, a hang past the
-- proxy's first-byte timeout) or a budget-busting session. wrk's own --timeout cuts some calls
-- short on the client side (client disconnects).
local n = 0
local body_json = '{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"soak"}]}'
local body_sse = '{"model":"gpt-4o-mini","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"soak"}]}'
local faults = { "drop-mid-stream", "500", "429", "hang" }

request = function()
  n = n + 1
  local h = {
    ["Content-Type"] = "application/json",
    ["x-session-id"] = "soak-" .. (n % 500),
    ["x-agent-name"] = "agent-" .. (n % 8),
    ["x-mock-output-chunks"] = tostring(8 + n % 24),
  }
  if n % 10 == 3 then h["x-mock-fault"] = faults[math.floor(n / 10) % 4 + 1] end
  if n % 50 == 7 then h["x-session-id"] = "soak-tight" end
  if n % 40 == 11 then h["x-mock-chunk-delay-ms"] = "300" end
  local body = (n % 2 == 0) and body_sse or body_json
  return wrk.format("POST", "/v1/chat/completions", h, body)
end
