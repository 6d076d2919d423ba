import * as grpc from '@grpc/grpc-js';
import { FlotillaError } from '../errors/error-codes';

// Absolute request deadlines across hops (client -> broker -> controller -> leader).
//
// gRPC carries a deadline as a *relative* `grpc-timeout`: a receiver starts its own clock
// when the request arrives. A request held up on the way — in a frozen broker, or in TCP
// retransmission across a network partition — therefore arrives with a fresh deadline long
// after its client gave up and retried elsewhere, and would be applied a second time (the
// chaos suite caught exactly this: a CreateTopic applied after the topic had been created
// through another node and deleted). So every Flotilla caller also sends the deadline as
// wall-clock epoch ms in `flotilla-deadline-ms`, every forwarder passes on the earlier of its
// own and the incoming one, and a controller refuses, before doing anything, a request whose
// deadline has passed (REQUEST_TIMED_OUT: not applied). This assumes the nodes' clocks agree
// to well within a request timeout (seconds), as NTP gives.

export const DEADLINE_HEADER = 'flotilla-deadline-ms';

/** Metadata carrying `deadlineMs` (epoch ms) as the absolute deadline; `md` is changed and returned. */
export function withAbsoluteDeadline(deadlineMs: number, md: grpc.Metadata = new grpc.Metadata()): grpc.Metadata {
  if (Number.isFinite(deadlineMs)) md.set(DEADLINE_HEADER, String(Math.floor(deadlineMs)));
  return md;
}

/** The absolute deadline a caller sent, or +Infinity when none (a foreign client). */
export function absoluteDeadlineOf(md: grpc.Metadata): number {
  const v = md.get(DEADLINE_HEADER)[0];
  const ms = v === undefined ? NaN : Number(v);
  return Number.isFinite(ms) && ms > 0 ? ms : Number.POSITIVE_INFINITY;
}

/** Throws REQUEST_TIMED_OUT when the request's absolute deadline passed before it could be served. */
export function refuseIfExpired(md: grpc.Metadata, method: string, nowMs: number = Date.now()): void {
  const deadlineMs = absoluteDeadlineOf(md);
  if (nowMs > deadlineMs) {
    throw new FlotillaError(
      'REQUEST_TIMED_OUT',
      `${method} arrived ${nowMs - deadlineMs} ms after its deadline (its caller has given up): refused, not applied`,
      { lateMs: nowMs - deadlineMs },
    );
  }
}
