-- wrk script: one agent conversation growing call by call, for the request document's recent
-- arrays (src/providers/doc/recent.rs). The kit's post.lua sends one body over and over, which
-- repeats the whole conversation; an agent's next call repeats its tools and every earlier turn
-- and adds its latest exchange. Body n (n = 0..STEPS-1, cycling) is post.lua's non-streaming
-- request (TOOLS declared tools, about HISTORY_KB KiB of earlier turns, the question) followed by
-- n more assistant/user exchanges; every STEPS-th request starts the conversation over.
-- Env: TOOLS [20], HISTORY_KB [0], STEPS [16], EXTRA_HEADERS as post.lua.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-mock"
local extra = os.getenv("EXTRA_HEADERS")
if extra and #extra > 0 then
  for kv in string.gmatch(extra, "[^|]+") do
    local k, v = string.match(kv, "^%s*([^:]+):%s*(.-)%s*$")
    if k then wrk.headers[k] = v end
  end
end
local history = ""
local kb = tonumber(os.getenv("HISTORY_KB") or "0")
local turn = 0
while #history < kb * 1024 do
  turn = turn + 1
  history = history .. '{"role":"user","content":"Step ' .. turn .. ': look up the order status for customer ' .. turn ..
    ' and summarise what changed since the last check, including shipping, billing and any open tickets."},' ..
    '{"role":"assistant","content":"The order for customer ' .. turn .. ' shipped yesterday; billing is settled; ' ..
    'one ticket about a delayed parcel is still open and waiting on the carrier."},'
end
local tools = ""
local ntools = tonumber(os.getenv("TOOLS") or "20")
for i = 1, ntools do
  tools = tools .. (i > 1 and "," or "") .. '{"type":"function","function":{"name":"tool_' .. i ..
    '","description":"Tool number ' .. i .. '","parameters":{"type":"object","properties":{"id":{"type":"string"},' ..
    '"limit":{"type":"integer","minimum":1,"maximum":100}},"required":["id"],"additionalProperties":false}}}'
end
local steps = tonumber(os.getenv("STEPS") or "16")
local bodies = {}
local later = ""
for n = 0, steps - 1 do
  if n > 0 then
    later = later .. ',{"role":"assistant","content":"Answer ' .. n .. ': hello there, in one short sentence."},' ..
      '{"role":"user","content":"Follow-up ' .. n .. ': and now for the next customer?"}'
  end
  bodies[n] = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},' ..
    history .. '{"role":"user","content":"Say hello in one short sentence."}' .. later .. '],"max_tokens":64,' ..
    (ntools > 0 and ('"tools":[' .. tools .. '],') or '') .. '"stream":false}'
end
local next_step = 0
request = function()
  local body = bodies[next_step]
  next_step = (next_step + 1) % steps
  return wrk.format(nil, nil, nil, body)
end
