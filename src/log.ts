import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/** The root logger. JSON to stdout (or to `destination`); components take `log.child({ component })`. */
export function createLogger(level: LevelWithSilent = 'info', destination?: pino.DestinationStream): Logger {
  const opts: pino.LoggerOptions = {
    level,
    base: { pid: process.pid },
    serializers: { err: pino.stdSerializers.err },
  };
  return destination ? pino(opts, destination) : pino(opts);
}
