-- Argo CD health of a kuant.dev/v1alpha1 Reconciliation: compares the ledger with the
-- exchange, once or on a schedule. Lua 5.1 (gopher-lua); `obj` is the resource.
local hs = {}

-- Reasons of Ready=False that mean "not yet", not "broken".
local progressingReasons = {
  Pending = true,
  Progressing = true,
  Reconciling = true,
  Running = true,
  Scheduled = true,
  Starting = true,
  Waiting = true,
  JobCreated = true,
  JobRunning = true,
}

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

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: no reconciliation runs"
  return hs
end

local drifted = getCondition(status.conditions, "Drifted")
if isTrue(drifted) then
  hs.status = "Degraded"
  if nonEmpty(drifted.message) then
    hs.message = drifted.message
  else
    hs.message = "Ledger and exchange balances drifted"
  end
  return hs
end

local ready = getCondition(status.conditions, "Ready")
if ready ~= nil and ready.status == "False" and not progressingReasons[ready.reason or ""] then
  hs.status = "Degraded"
  hs.message = explain(ready, "Not ready")
  return hs
end

local inSync = getCondition(status.conditions, "InSync")
if isTrue(inSync) then
  hs.status = "Healthy"
  if nonEmpty(inSync.message) then
    hs.message = inSync.message
  else
    hs.message = "In sync"
  end
  return hs
end

hs.status = "Progressing"
if ready ~= nil and nonEmpty(ready.message) then
  hs.message = ready.message
else
  hs.message = "Waiting for the first reconciliation run"
end
return hs
