// Structured JSON logs (pino) on stdout. Nothing on the request path logs at
// info: per-request lines would cost more than the proxying itself.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level = process.env['SWITCHYARD_LOG_LEVEL'] ?? 'info'): Logger {
  return pino({ name: 'switchyard', level, base: { pid: process.pid } });
}
