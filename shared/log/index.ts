// Public surface of shared/log. Imports only pino and pino-pretty.
export { createLogger, silentLogger } from './logger';
export type { Logger, LoggerOptions } from './logger';
