import * as grpc from '@grpc/grpc-js';
import { ErrorCode, ErrorName, FlotillaError, errorNameForCode } from '../errors/error-codes';

// A FlotillaError crosses gRPC as a status plus trailing metadata carrying the code
// table's numeric code and details; any gRPC client can read `flotilla-error-code`.

const STATUS_FOR: Partial<Record<ErrorName, grpc.status>> = {
  UNKNOWN: grpc.status.INTERNAL,
  NOT_CONTROLLER: grpc.status.FAILED_PRECONDITION,
  CONTROLLER_UNAVAILABLE: grpc.status.UNAVAILABLE,
  REQUEST_TIMED_OUT: grpc.status.DEADLINE_EXCEEDED,
  TOPIC_ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  UNKNOWN_TOPIC: grpc.status.NOT_FOUND,
  UNKNOWN_PARTITION: grpc.status.NOT_FOUND,
  UNKNOWN_BROKER: grpc.status.NOT_FOUND,
  PROPOSAL_DROPPED: grpc.status.UNAVAILABLE,
  LIMIT_EXCEEDED: grpc.status.RESOURCE_EXHAUSTED,
};

export function toGrpcError(err: unknown): Partial<grpc.StatusObject> {
  const fe = err instanceof FlotillaError ? err : new FlotillaError('UNKNOWN', String((err as Error)?.message ?? err));
  const md = new grpc.Metadata();
  md.set('flotilla-error-code', String(fe.code));
  md.set('flotilla-error-name', fe.name);
  md.set('flotilla-error-details', JSON.stringify(fe.details));
  return {
    code: STATUS_FOR[fe.name] ?? (fe.retriable ? grpc.status.UNAVAILABLE : grpc.status.INVALID_ARGUMENT),
    details: `${fe.name}: ${fe.message}`,
    metadata: md,
  };
}

/** Turn a gRPC failure back into a FlotillaError; transport failures become retriable. */
export function fromGrpcError(err: grpc.ServiceError): FlotillaError {
  const codeValue = err.metadata?.get('flotilla-error-code')?.[0];
  if (codeValue !== undefined) {
    const name = errorNameForCode(Number(codeValue));
    let details: Record<string, string | number> = {};
    try {
      details = JSON.parse(String(err.metadata.get('flotilla-error-details')[0] ?? '{}'));
    } catch {
      details = {};
    }
    const message = String(err.details ?? '').replace(new RegExp(`^${name}: `), '');
    return new FlotillaError(name, message, details, { cause: err });
  }
  if (err.code === grpc.status.DEADLINE_EXCEEDED) return new FlotillaError('REQUEST_TIMED_OUT', err.details || 'deadline exceeded', {}, { cause: err });
  if (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.CANCELLED) {
    return new FlotillaError('CONTROLLER_UNAVAILABLE', `unreachable: ${err.details}`, {}, { cause: err });
  }
  if (err.code === grpc.status.RESOURCE_EXHAUSTED) return new FlotillaError('INVALID_REQUEST', `request too large: ${err.details}`, {}, { cause: err });
  return new FlotillaError('UNKNOWN', `${grpc.status[err.code] ?? err.code}: ${err.details}`, {}, { cause: err });
}

export { ErrorCode };
