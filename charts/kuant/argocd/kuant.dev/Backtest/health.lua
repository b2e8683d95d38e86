-- Argo CD health of a kuant.dev/v1alpha1 Backtest: a finite run that ends Complete
-- (Healthy) or Failed (Degraded). Lua 5.1 (gopher-lua); `obj` is the resource.
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

local function decimal(value)
  local number = tonumber(value)
  if number == nil then
    return tostring(value)
  end
  return string.format("%.2f", number)
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

local failed = getCondition(status.conditions, "Failed")
if isTrue(failed) or status.phase == "Failed" then
  hs.status = "Degraded"
  if failed ~= nil and nonEmpty(failed.message) then
    hs.message = failed.message
  elseif nonEmpty(status.message) then
    hs.message = status.message
  else
    hs.message = "Backtest failed"
  end
  return hs
end

local complete = getCondition(status.conditions, "Complete")
if isTrue(complete) then
  hs.status = "Healthy"
  local results = status.results
  if results ~= nil and results.totalReturnPct ~= nil then
    local parts = { "total return " .. decimal(results.totalReturnPct) .. "%" }
    if results.sharpe ~= nil then
      table.insert(parts, "Sharpe " .. decimal(results.sharpe))
    end
    if results.maxDrawdownPct ~= nil then
      table.insert(parts, "max drawdown " .. decimal(results.maxDrawdownPct) .. "%")
    end
    if results.trades ~= nil then
      table.insert(parts, integer(results.trades) .. " trades")
    end
    hs.message = "Complete: " .. table.concat(parts, ", ")
  elseif nonEmpty(complete.message) then
    hs.message = complete.message
  else
    hs.message = "Complete"
  end
  return hs
end

-- Pending or Running: say how far it got.
hs.status = "Progressing"
local phase = status.phase
if not nonEmpty(phase) then
  phase = "Pending"
end
local progress = status.progress
local percent = nil
if progress ~= nil then
  percent = tonumber(progress.percent)
  local processed = tonumber(progress.candlesProcessed)
  local total = tonumber(progress.candlesTotal)
  if percent == nil and processed ~= nil and total ~= nil and total > 0 then
    percent = processed * 100 / total
  end
  if percent ~= nil then
    hs.message = phase .. ": " .. integer(percent) .. "%"
    if processed ~= nil and total ~= nil then
      hs.message = hs.message .. " (" .. integer(processed) .. "/" .. integer(total) .. " candles)"
    end
  end
end
if percent == nil then
  local progressing = getCondition(status.conditions, "Progressing")
  if progressing ~= nil and nonEmpty(progressing.message) then
    hs.message = phase .. ": " .. progressing.message
  else
    hs.message = phase
  end
end
return hs
