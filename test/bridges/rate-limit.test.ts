/**
 * The bridges' rate limit (BRIDGE_*_PER_MINUTE): a token bucket of one minute's worth, so a
 * burst up to the limit goes at once and then sends are spread evenly, never more than the
 * channel's quota in any minute. Driven by a clock of the test's own.
 */
import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../../src/bridges/host.js';

describe('the bridge rate limit', () => {
  it('lets a minute’s worth go at once, then one every 60/limit seconds', () => {
    let now = 1_000_000;
    const limiter = new RateLimiter(6, () => now);
    for (let i = 0; i < 6; i++) {
      expect(limiter.wait()).toBe(0);
      limiter.take();
    }
    // Empty: the next send waits for one token, 10 s at six a minute.
    expect(limiter.wait()).toBe(10_000);
    now += 4_000;
    expect(limiter.wait()).toBe(6_000);
    now += 6_000;
    expect(limiter.wait()).toBe(0);
    limiter.take();
    expect(limiter.wait()).toBe(10_000);
  });

  it('never holds more than a minute’s worth after a long quiet spell', () => {
    let now = 0;
    const limiter = new RateLimiter(2, () => now);
    now += 3_600_000;
    limiter.take();
    limiter.take();
    expect(limiter.wait()).toBe(30_000);
  });

  it('does not limit at 0', () => {
    const limiter = new RateLimiter(0, () => 0);
    for (let i = 0; i < 1000; i++) limiter.take();
    expect(limiter.wait()).toBe(0);
  });
});
