import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "e2e/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Kernel tests build network namespaces; keep files in one fork at a time so two
    // suites never race for the CPU that their probe timeouts depend on.
    fileParallelism: false,
    pool: "forks",
  },
});
