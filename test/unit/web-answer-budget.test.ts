import t from 'tap';
import { AnswerBudget, CONNECTION_TURN_ANSWER_BYTES, TURN_ANSWER_BYTES } from '../../src/web/answer-budget.js';

/** One turn of the event loop: the budget's reset has run. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

t.test('the answers of one run (one connection, one read) are refused past the per-connection budget', async (t) => {
  const b = new AnswerBudget(100, 1000);
  t.equal(b.spend('10.0.0.1', 60), true);
  t.equal(b.spend('10.0.0.1', 40), true, 'up to the budget');
  t.equal(b.spend('10.0.0.1', 1), false, 'past it: refused');
});

t.test('a refusal ends the run: its connection is closed before another of its requests is handled', async (t) => {
  const b = new AnswerBudget(100, 1000);
  t.equal(b.spend('10.0.0.1', 90), true);
  t.equal(b.spend('10.0.0.1', 20), false, 'the flood is refused');
  t.equal(b.spend('10.0.0.1', 90), true, 'the next answer, even from the same address, is another connection: a fresh budget');
});

t.test('answers to another address are another run, with a budget of their own', async (t) => {
  const b = new AnswerBudget(100, 1000);
  t.equal(b.spend('10.0.0.1', 99), true, 'a client just under its budget');
  t.equal(b.spend('10.0.0.2', 99), true, 'another address is not charged for it');
  t.equal(b.spend('10.0.0.1', 99), true, 'back to the first address: a new run (another read)');
});

t.test('two runs from one address, the first not refused, are charged as one (uWS.js tells no connection apart)', async (t) => {
  const b = new AnswerBudget(100, 1000);
  t.equal(b.spend('10.0.0.1', 99), true);
  t.equal(b.spend('10.0.0.1', 2), false);
});

t.test('the total caps all connections of a turn; an answer that still fits is written', async (t) => {
  const b = new AnswerBudget(100, 250);
  t.equal(b.spend('10.0.0.1', 100), true);
  t.equal(b.spend('10.0.0.2', 100), true);
  t.equal(b.spend('10.0.0.3', 60), false, 'past the total: refused although under its own budget');
  t.equal(b.spend('10.0.0.4', 50), true, 'a smaller answer that fits the rest');
  t.equal(b.spend('10.0.0.5', 1), false, 'the total is spent');
});

t.test('the next turn starts afresh', async (t) => {
  const b = new AnswerBudget(100, 250);
  t.equal(b.spend('10.0.0.1', 100), true);
  t.equal(b.spend('10.0.0.2', 100), true);
  t.equal(b.spend('10.0.0.1', 100), false);
  await turn();
  t.equal(b.spend('10.0.0.1', 100), true, 'a new turn: the run and the total are reset');
  t.equal(b.spend('10.0.0.2', 100), true);
});

t.test('the defaults: 4 MiB per connection, 16 MiB in all, per turn', async (t) => {
  t.equal(CONNECTION_TURN_ANSWER_BYTES, 4 * 1024 * 1024);
  t.equal(TURN_ANSWER_BYTES, 16 * 1024 * 1024);
});

t.test('with web.token set, answers to requests without it take at most half of the total: the authenticated keep the rest', async (t) => {
  const b = new AnswerBudget(100, 400);
  t.equal(b.spend('10.0.0.1', 100, false), true);
  t.equal(b.spend('10.0.0.2', 100, false), true, 'half of the total');
  t.equal(b.spend('10.0.0.3', 1, false), false, 'past half: an answer without the token is refused');
  t.equal(b.spend('10.0.0.4', 100, true), true, 'one that proved the token still fits');
  t.equal(b.spend('10.0.0.5', 100, true), true);
  t.equal(b.spend('10.0.0.6', 1, true), false, 'the total still caps them all');
  await turn();
  t.equal(b.spend('10.0.0.1', 100, null), true, 'without a token set, one pool: the whole total');
  t.equal(b.spend('10.0.0.2', 100, null), true);
  t.equal(b.spend('10.0.0.3', 100, null), true, 'past half');
});
