import { expect } from 'chai';
import { createLogger } from '../../shared/log';

describe('shared/log createLogger', () => {
  it('writes JSON lines that carry nodeId and role, also from child loggers', () => {
    const lines: string[] = [];
    const destination = { write: (line: string) => void lines.push(line) };
    const log = createLogger({ nodeId: 3, role: 'controller', level: 'info', pretty: false, destination });

    log.info({ term: 7 }, 'became leader');
    log.child({ component: 'raft-driver' }).warn('slow fsync');
    log.debug('below the level: not written');

    expect(lines).to.have.length(2);
    const [first, second] = lines.map((line) => JSON.parse(line));
    expect(first).to.include({ nodeId: 3, role: 'controller', term: 7, msg: 'became leader', level: 30 });
    expect(second).to.include({ nodeId: 3, role: 'controller', component: 'raft-driver', level: 40 });
  });
});
