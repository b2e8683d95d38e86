import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";

import { badge, type KuantResource } from "./status.js";

const argocd = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "charts", "kuant", "argocd", "kuant.dev");

interface HealthTest {
  tests: { healthStatus: { status: string; message: string }; inputPath: string }[];
}

for (const kind of ["Backtest", "TradingSession", "Reconciliation"]) {
  test(`${kind}: the dashboard badge agrees with the Argo CD health check on every sample`, () => {
    const dir = join(argocd, kind);
    const cases = (parse(readFileSync(join(dir, "health_test.yaml"), "utf8")) as HealthTest).tests;
    assert.ok(cases.length >= 4, `${kind}: expected at least 4 samples, found ${cases.length}`);
    for (const c of cases) {
      const resource = parse(readFileSync(join(dir, c.inputPath), "utf8")) as KuantResource;
      assert.equal(badge(resource).health, c.healthStatus.status, `${kind} ${c.inputPath}`);
    }
  });
}

test("a resource without status waits for the operator", () => {
  const r: KuantResource = { kind: "Backtest", metadata: { name: "bt", generation: 1 } };
  assert.deepEqual(badge(r), { health: "Progressing", message: "Waiting for the operator" });
});

test("a running backtest shows its progress", () => {
  const r: KuantResource = {
    kind: "Backtest",
    metadata: { name: "bt", generation: 1 },
    status: { observedGeneration: 1, phase: "Running", progress: { percent: 41.7 } },
  };
  assert.deepEqual(badge(r), { health: "Progressing", message: "Running: 41%" });
});

test("the kill switch wins over every other session state", () => {
  const r: KuantResource = {
    kind: "TradingSession",
    metadata: { name: "ts", generation: 3 },
    spec: { suspend: true },
    status: {
      observedGeneration: 3,
      conditions: [{ type: "Halted", status: "True", reason: "MaxDrawdown", message: "drawdown 21% > 20%" }],
    },
  };
  assert.equal(badge(r).health, "Suspended");
});

test("a halted session says why", () => {
  const r: KuantResource = {
    kind: "TradingSession",
    metadata: { name: "ts", generation: 1 },
    status: {
      observedGeneration: 1,
      conditions: [
        { type: "Ready", status: "True", message: "trading" },
        { type: "Halted", status: "True", reason: "DailyLossLimit", message: "loss today 5.2% > 5%" },
      ],
    },
  };
  assert.deepEqual(badge(r), { health: "Degraded", message: "loss today 5.2% > 5%" });
});
