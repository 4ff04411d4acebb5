/**
 * The agent's timing mechanisms on real timers: the bounded runner (the reconciler's and the
 * revoker's) and the liveness watchdog with a real event-loop stall.
 */
import { describe, expect, it } from "vitest";
import { BoundedRunner } from "../src/agent/bounded-runner.js";
import { Liveness } from "../src/agent/liveness.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `pred` holds (timers on a loaded machine run late; never assume a duration). */
async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error("timed out");
    await sleep(5);
  }
}

describe("BoundedRunner", () => {
  it("coalesces requests, never overlaps runs, and runs exactly once more after requests made while running", async () => {
    let running = 0;
    let maxRunning = 0;
    const starts: number[] = [];
    const runner = new BoundedRunner({
      delayMs: 10,
      task: async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        starts.push(performance.now());
        await sleep(50);
        running--;
      },
    });
    for (let i = 0; i < 5; i++) runner.request(); // one window: one run
    await until(() => running === 1);
    for (let i = 0; i < 5; i++) runner.request(); // during the run: one more run after it
    await until(() => starts.length === 2);
    await runner.idle();
    await sleep(50);
    expect(starts).toHaveLength(2);
    expect(maxRunning).toBe(1);
    await runner.stop();
    runner.request();
    await sleep(50);
    expect(starts).toHaveLength(2); // stopped: no more runs
  });

  it("keeps minIntervalMs between starts", async () => {
    const starts: number[] = [];
    const runner = new BoundedRunner({
      delayMs: 0,
      minIntervalMs: 100,
      task: async () => {
        starts.push(performance.now());
      },
    });
    runner.request();
    await until(() => starts.length === 1);
    runner.request();
    await until(() => starts.length === 2);
    await runner.stop();
    expect(starts[1] - starts[0]).toBeGreaterThanOrEqual(95);
  });

  it("retries a failing run with capped exponential backoff and resets it on success", async () => {
    const starts: number[] = [];
    const failures: [number, number | undefined][] = [];
    let fail = 4;
    const runner = new BoundedRunner({
      delayMs: 0,
      retry: { initialMs: 20, maxMs: 60 },
      onFailure: (_e, attempt, retryInMs) => failures.push([attempt, retryInMs]),
      task: async () => {
        starts.push(performance.now());
        if (fail-- > 0) throw new Error("not yet");
      },
    });
    runner.request();
    await until(() => starts.length === 5);
    await runner.idle();
    await runner.stop();
    expect(failures).toEqual([
      [1, 20],
      [2, 40],
      [3, 60],
      [4, 60],
    ]);
    expect(starts).toHaveLength(5);
    expect(runner.failures).toBe(0);
    const gaps = starts.slice(1).map((t, i) => t - starts[i]);
    expect(gaps[0]).toBeGreaterThanOrEqual(18);
    expect(gaps[2]).toBeGreaterThanOrEqual(55);
  });

  it("idle() waits for a run that was asked for and has not started yet", async () => {
    let runs = 0;
    const runner = new BoundedRunner({
      delayMs: 30,
      task: async () => {
        runs++;
      },
    });
    runner.request();
    await runner.idle();
    expect(runs).toBe(1);
    runner.request();
    await runner.stop(); // a requested run that never started does not hold stop() up
    expect(runs).toBe(1);
  });

  it("runNow waits for the run in progress, then runs at once", async () => {
    let runs = 0;
    const runner = new BoundedRunner({
      delayMs: 10_000,
      task: async () => {
        runs++;
        await sleep(20);
      },
    });
    runner.request(0);
    await sleep(5);
    await runner.runNow();
    expect(runs).toBe(2);
    await runner.stop();
  });
});

describe("Liveness", () => {
  it("a blocked event loop makes the agent not alive for a while after; a fatal error for good", async () => {
    const l = new Liveness({ heartbeatMs: 20, stallMs: 400, stallHoldMs: 1000 });
    l.start();
    await sleep(60);
    const end = performance.now() + 700;
    while (performance.now() < end) {
      // a real stall: nothing else runs on this loop meanwhile
    }
    await sleep(40);
    const stalled = l.check();
    expect(stalled.alive).toBe(false);
    expect(stalled.reason).toMatch(/event loop stalled/);
    await until(() => l.check().alive, 5000); // recovered once the hold is over
    l.fatal(new Error("cannot listen on /x.sock"));
    expect(l.check()).toEqual({ alive: false, reason: "fatal: cannot listen on /x.sock" });
    l.stop();
  });

  it("a sync running far longer than any sync should means the loop is wedged", () => {
    let since: number | undefined;
    const l = new Liveness({ syncStallMs: 1000, syncRunningSince: () => since });
    expect(l.check().alive).toBe(true);
    since = performance.now() - 500;
    expect(l.check().alive).toBe(true);
    since = performance.now() - 5000;
    expect(l.check()).toMatchObject({ alive: false, reason: "a sync has been running for 5 s" });
  });
});
