import type t from 'tap';
import { ConfigError } from '../../src/errors.js';

type Asserts = Pick<typeof t, 'type' | 'equal' | 'fail'>;

/** Runs fn, asserts it throws a ConfigError (its code RELAY_ERR_CONFIG) and returns it. */
export function configError(t: Asserts, fn: () => unknown): ConfigError | undefined {
  try {
    fn();
  } catch (err) {
    t.type(err, ConfigError);
    t.equal((err as ConfigError).code, 'RELAY_ERR_CONFIG');
    return err as ConfigError;
  }
  t.fail('expected a ConfigError');
  return undefined;
}
