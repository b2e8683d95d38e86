-- Argo CD health of a kuant.dev/v1alpha1 TradingSession: a long-running paper or live
-- session whose summary condition is Ready. Lua 5.1 (gopher-lua); `obj` is the resource.
local hs = {}

local function getCondition(conditions, conditionType)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function isTrue(condition)
  return condition ~= nil and condition.status == "True"
end

local function nonEmpty(value)
  return value ~= nil and value ~= ""
end

local function integer(value)
  return string.format("%d", math.floor(tonumber(value)))
end

-- "Reason: message", or whichever of the two is set, or the fallback.
local function explain(condition, fallback)
  if condition == nil then
    return fallback
  end
  if nonEmpty(condition.reason) and nonEmpty(condition.message) then
    return condition.reason .. ": " .. condition.message
  end
  if nonEmpty(condition.message) then
    return condition.message
  end
  if nonEmpty(condition.reason) then
    return condition.reason
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local generation = (obj.metadata or {}).generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. integer(generation)
  return hs
end

-- The kill switch is a deliberate state, not a failure.
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: kill switch on"
  return hs
end

local ready = getCondition(status.conditions, "Ready")

-- Refused by the operator (live without acknowledgement or credentials, a Secret another
-- live session trades with) or an agent that cannot run.
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain(ready, status.message or "Session failed")
  return hs
end

-- The agent stopped reporting: nobody can tell whether it still trades.
if ready ~= nil and ready.reason == "HeartbeatLost" then
  hs.status = "Degraded"
  hs.message = explain(ready, "Heartbeat lost")
  return hs
end

-- A risk limit, a recovery mismatch or a hold from outside (reason Held) stopped trading.
local halted = getCondition(status.conditions, "Halted")
if isTrue(halted) then
  hs.status = "Degraded"
  hs.message = explain(halted, "Trading halted")
  return hs
end

-- Starting: the agent waits for its pod, its first market data or its trading Lease.
if status.phase == nil or status.phase == "Pending" or status.phase == "Starting" then
  hs.status = "Progressing"
  if ready ~= nil and nonEmpty(ready.message) then
    hs.message = ready.message
  else
    hs.message = "Waiting for the session to start"
  end
  return hs
end

local degraded = getCondition(status.conditions, "Degraded")
if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = explain(degraded, "Session degraded")
  return hs
end

if isTrue(ready) then
  hs.status = "Healthy"
  if nonEmpty(ready.message) then
    hs.message = ready.message
  else
    hs.message = "Ready"
  end
  return hs
end

hs.status = "Progressing"
if ready ~= nil and nonEmpty(ready.message) then
  hs.message = ready.message
elseif nonEmpty(status.phase) then
  hs.message = status.phase
else
  hs.message = "Waiting for the session to become ready"
end
return hs
