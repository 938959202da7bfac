import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests each start their own listening server on a free port.
    pool: 'forks',
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
