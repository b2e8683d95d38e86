// What the dashboard shows for a kuant resource: one badge (health) and one line (message),
// computed from status.conditions the way the chart's Argo CD health checks compute theirs, so
// the dashboard and Argo CD never disagree about a resource (see status.test.ts).

/** A metav1.Condition as the API server returns it. */
export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason?: string;
  message?: string;
  observedGeneration?: number;
}

/** The parts of a kuant resource (Backtest, TradingSession, Reconciliation) the badge reads. */
export interface KuantResource {
  kind: string;
  metadata: { name: string; generation?: number };
  spec?: { suspend?: boolean };
  status?: {
    phase?: string;
    observedGeneration?: number;
    conditions?: Condition[];
    message?: string;
    progress?: { percent?: number };
  };
}

export type Health = "Healthy" | "Progressing" | "Degraded" | "Suspended";

export interface Badge {
  health: Health;
  message: string;
}

/** Ready=False reasons that mean "not there yet" rather than "broken" (Reconciliation). */
const PROGRESSING_REASONS = new Set([
  "Pending",
  "Progressing",
  "Reconciling",
  "Running",
  "Scheduled",
  "Starting",
  "Waiting",
  "JobCreated",
  "JobRunning",
]);

export function condition(resource: KuantResource, type: string): Condition | undefined {
  return resource.status?.conditions?.find((c) => c.type === type);
}

function isTrue(c: Condition | undefined): c is Condition {
  return c?.status === "True";
}

function describe(c: Condition | undefined, fallback: string): string {
  return c?.message || fallback;
}

/** The badge of any kuant resource. */
export function badge(resource: KuantResource): Badge {
  const status = resource.status;
  if (!status) {
    return { health: "Progressing", message: "Waiting for the operator" };
  }
  const generation = resource.metadata.generation;
  if (generation !== undefined && (status.observedGeneration ?? -1) < generation) {
    return { health: "Progressing", message: `Waiting for the operator to observe generation ${generation}` };
  }
  switch (resource.kind) {
    case "Backtest":
      return backtestBadge(resource);
    case "TradingSession":
      return sessionBadge(resource);
    case "Reconciliation":
      return reconciliationBadge(resource);
    default:
      return { health: "Progressing", message: `Unknown kind ${resource.kind}` };
  }
}

function backtestBadge(r: KuantResource): Badge {
  const failed = condition(r, "Failed");
  if (isTrue(failed) || r.status?.phase === "Failed") {
    return { health: "Degraded", message: describe(failed, r.status?.message || "Backtest failed") };
  }
  const complete = condition(r, "Complete");
  if (isTrue(complete)) {
    return { health: "Healthy", message: complete.message || "Complete" };
  }
  const percent = r.status?.progress?.percent;
  const phase = r.status?.phase ?? "Pending";
  return { health: "Progressing", message: percent === undefined ? phase : `${phase}: ${Math.floor(percent)}%` };
}

function sessionBadge(r: KuantResource): Badge {
  if (r.spec?.suspend) {
    return { health: "Suspended", message: "Suspended: kill switch on" };
  }
  const ready = condition(r, "Ready");
  const phase = r.status?.phase;
  // Refused by the operator, or an agent that cannot run.
  if (phase === "Failed") {
    return { health: "Degraded", message: describe(ready, r.status?.message || "Session failed") };
  }
  // The agent stopped reporting.
  if (ready?.reason === "HeartbeatLost") {
    return { health: "Degraded", message: describe(ready, "Heartbeat lost") };
  }
  // A risk limit, a recovery mismatch or a hold (reason Held).
  const halted = condition(r, "Halted");
  if (isTrue(halted)) {
    return { health: "Degraded", message: describe(halted, `Halted: ${halted.reason ?? "unknown reason"}`) };
  }
  // Waiting for the pod, the first market data or the trading Lease.
  if (phase === undefined || phase === "Pending" || phase === "Starting") {
    return { health: "Progressing", message: describe(ready, "Waiting for the session to start") };
  }
  const degraded = condition(r, "Degraded");
  if (isTrue(degraded)) {
    return { health: "Degraded", message: describe(degraded, "Degraded") };
  }
  if (isTrue(ready)) {
    return { health: "Healthy", message: ready.message || "Trading" };
  }
  return { health: "Progressing", message: describe(ready, phase) };
}

function reconciliationBadge(r: KuantResource): Badge {
  if (r.spec?.suspend) {
    return { health: "Suspended", message: "Suspended: scheduled runs paused" };
  }
  const drifted = condition(r, "Drifted");
  if (isTrue(drifted)) {
    return { health: "Degraded", message: describe(drifted, "Drift beyond the threshold") };
  }
  const ready = condition(r, "Ready");
  if (ready?.status === "False" && !PROGRESSING_REASONS.has(ready.reason ?? "")) {
    return { health: "Degraded", message: describe(ready, ready.reason ?? "Not ready") };
  }
  const inSync = condition(r, "InSync");
  if (isTrue(inSync)) {
    return { health: "Healthy", message: inSync.message || "In sync" };
  }
  return { health: "Progressing", message: describe(ready, r.status?.phase ?? "Pending") };
}
