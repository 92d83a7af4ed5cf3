import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Root-level: runs once per `vitest run`, whichever projects are selected; both
    // projects inherit what it provides (inject("postgres")).
    globalSetup: ["test/harness/postgres-setup.ts"],
    projects: [
      {
        test: {
          name: "unit",
          include: ["manager/src/**/*.test.ts", "manager/testing/**/*.test.ts", "agent/src/**/*.test.ts", "agent/testing/**/*.test.ts", "web/src/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/**/*.test.ts"],
          globalSetup: ["test/harness/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          // Real processes and one Docker engine: files run one at a time.
          fileParallelism: false,
        },
      },
    ],
  },
});
