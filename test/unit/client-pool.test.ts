import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { GrpcClientPool } from '../../shared/rpc/client-pool';
import { DEADLINE_HEADER } from '../../shared/rpc/deadline';

// GrpcClientPool's bookkeeping, with a stand-in client class (no sockets): at most
// clientsMax open, the chosen victim closed first, calls carry the absolute deadline.

interface Seen {
  opened: string[];
  closed: string[];
  calls: { address: string; request: unknown; md: grpc.Metadata; opts: grpc.CallOptions }[];
}

function fakeCtor(seen: Seen): grpc.ServiceClientConstructor {
  class Fake {
    constructor(readonly address: string) {
      seen.opened.push(address);
    }
    close(): void {
      seen.closed.push(this.address);
    }
    /** Answers like grpc-js: the callback, then 'status' with the trailers in the same turn. */
    Echo(request: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<unknown>): EventEmitter {
      seen.calls.push({ address: this.address, request, md, opts });
      const call = new EventEmitter();
      setImmediate(() => {
        cb(null, { echoed: request });
        const trailers = new grpc.Metadata();
        trailers.set('x-trailer', this.address);
        call.emit('status', { code: grpc.status.OK, details: '', metadata: trailers });
      });
      return call;
    }
  }
  return Fake as unknown as grpc.ServiceClientConstructor;
}

describe('shared/rpc GrpcClientPool', () => {
  it('reuses one client per address and never holds more than clientsMax (oldest closed first)', () => {
    const seen: Seen = { opened: [], closed: [], calls: [] };
    const pool = new GrpcClientPool(fakeCtor(seen), { clientsMax: 2 });
    const a = pool.get('a:1');
    expect(pool.get('a:1')).to.equal(a);
    pool.get('b:1');
    pool.get('c:1');
    expect(pool.size).to.equal(2);
    expect(seen.opened).to.deep.equal(['a:1', 'b:1', 'c:1']);
    expect(seen.closed).to.deep.equal(['a:1']);
    pool.close();
    expect(pool.size).to.equal(0);
    expect(seen.closed.sort()).to.deep.equal(['a:1', 'b:1', 'c:1']);
  });

  it('closes the victim pickVictim chooses, after telling onEvict', () => {
    const seen: Seen = { opened: [], closed: [], calls: [] };
    const evicted: string[] = [];
    const configured = ['a:1', 'b:1'];
    const pool = new GrpcClientPool(fakeCtor(seen), {
      clientsMax: 3,
      pickVictim: (open) => open.find((x) => !configured.includes(x)) ?? open[0]!,
      onEvict: (address) => {
        expect(seen.closed).to.not.include(address);
        evicted.push(address);
      },
    });
    for (const x of ['a:1', 'learned:1', 'b:1', 'c:1']) pool.get(x);
    expect(evicted).to.deep.equal(['learned:1']);
    expect(seen.closed).to.deep.equal(['learned:1']);
  });

  it('unary sends the absolute deadline in metadata and as the gRPC deadline, keeping caller metadata', async () => {
    const seen: Seen = { opened: [], closed: [], calls: [] };
    const pool = new GrpcClientPool(fakeCtor(seen), { clientsMax: 4 });
    const md = new grpc.Metadata();
    md.set('x-hops', '1');
    const deadlineMs = Date.now() + 5_000;
    const res = await pool.unary<{ echoed: unknown }>('a:1', 'Echo', { n: 7 }, deadlineMs, md);
    expect(res.echoed).to.deep.equal({ n: 7 });
    const call = seen.calls[0]!;
    expect(call.md.get(DEADLINE_HEADER)).to.deep.equal([String(Math.floor(deadlineMs))]);
    expect(call.md.get('x-hops')).to.deep.equal(['1']);
    expect(call.opts.deadline).to.equal(deadlineMs);
    const withTrailers = await pool.unaryWithTrailers<{ echoed: unknown }>('b:1', 'Echo', { n: 8 }, deadlineMs);
    expect(withTrailers.res.echoed).to.deep.equal({ n: 8 });
    expect(withTrailers.trailers.get('x-trailer')).to.deep.equal(['b:1']);
  });

  it('refuses an unknown method and a non-positive bound with a clear error', async () => {
    const seen: Seen = { opened: [], closed: [], calls: [] };
    const pool = new GrpcClientPool(fakeCtor(seen), { clientsMax: 1 });
    let err: Error | undefined;
    await pool.unary('a:1', 'Nope', {}, Date.now() + 1000).catch((e: Error) => (err = e));
    expect(err?.message).to.match(/no unary method Nope/);
    expect(() => new GrpcClientPool(fakeCtor(seen), { clientsMax: 0 })).to.throw(RangeError);
  });
});
