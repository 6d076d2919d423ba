// How a long-running Flotilla process (controller, broker) ends: cleanly on SIGTERM/SIGINT,
// and, when spawned by `flotilla cluster up` (stopOnStdinClose), when its parent goes away
// (its stdin pipe closes), so no child outlives a killed parent.

export interface Stoppable {
  stop(): Promise<void>;
}

export interface StopLogger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * Resolves once `running` has stopped. Returns through `requestStop` a function that starts
 * the stop from inside the process (e.g. after a fatal error). A second request while
 * stopping is ignored: a parent escalates to SIGKILL if it must.
 */
export function runUntilStopped(
  running: Stoppable,
  opts: { logger: StopLogger; stopOnStdinClose?: boolean },
  requestStop?: (stop: (why: string) => void) => void,
): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopRequested = false;
    const onStop = (why: string): void => {
      if (stopRequested) return;
      stopRequested = true;
      opts.logger.info({ why }, 'stop requested');
      running
        .stop()
        .catch((err: unknown) => opts.logger.error({ err }, 'unclean stop'))
        .finally(() => {
          // An open stdin pipe would keep the process alive after the stop.
          if (opts.stopOnStdinClose) process.stdin.destroy();
          resolve();
        });
    };
    requestStop?.(onStop);
    process.on('SIGTERM', () => onStop('SIGTERM'));
    process.on('SIGINT', () => onStop('SIGINT'));
    if (opts.stopOnStdinClose) {
      process.stdin.on('end', () => onStop('stdin closed: the parent process is gone'));
      process.stdin.on('error', () => onStop('stdin failed: the parent process is gone'));
      process.stdin.resume();
    }
  });
}
