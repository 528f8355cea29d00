/**
 * Password checks take the same path whatever the guess: both sides are hashed to equal-size digests and always
 * compared with timingSafeEqual, so neither a wrong length nor an unknown user answers faster.
 */
import t from 'tap';
import type * as Crypto from 'node:crypto';

const sizes: Array<[number, number]> = [];
const crypto = await import('node:crypto');
const { passwordMatches } = await t.mockImport<typeof import('../../src/downstream/commands.js')>('../../src/downstream/commands.js', {
  'node:crypto': {
    ...crypto,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      sizes.push([a.byteLength, b.byteLength]);
      return crypto.timingSafeEqual(a, b);
    },
  } satisfies typeof Crypto,
});

t.test('every guess, of any length, is compared in full as a 32-byte digest', async (t) => {
  const cases: Array<[string, boolean]> = [
    ['s3cret', true],
    ['s3creT', false],
    ['s', false],
    ['', false],
    ['s3cret-and-much-longer', false],
    ['x'.repeat(100_000), false],
  ];
  for (const [guess, ok] of cases) t.equal(passwordMatches('s3cret', guess), ok, `${guess.slice(0, 20)}: ${ok}`);
  t.strictSame(sizes, cases.map(() => [32, 32]), 'timingSafeEqual ran for each, on digests');
});
