import type { ClusterDescription, ClusterEvent, PartitionDescription, QuorumDescription, TopicDescription } from '../client';

// Human output of the CLI: aligned plain-text tables. --json bypasses all of this.

export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

const ids = (xs: readonly number[]): string => (xs.length > 0 ? xs.join(',') : '-');

/** A topic as `topics describe` shows it: the controller's view plus each leader's high watermark (null: unknown). */
export interface TopicWithHighWatermarks extends Omit<TopicDescription, 'partitions'> {
  readonly partitions: readonly (PartitionDescription & { readonly highWatermark?: number | null })[];
}

export function formatTopics(topics: readonly TopicWithHighWatermarks[]): string {
  if (topics.length === 0) return 'no topics';
  const out: string[] = [];
  for (const t of topics) {
    const configs = Object.entries(t.configs)
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    out.push(`Topic: ${t.name}  id: ${t.topicId}  partitions: ${t.partitions.length}${configs ? `  configs: ${configs}` : ''}`);
    out.push(
      table(
        ['PARTITION', 'LEADER', 'REPLICAS', 'ISR', 'HW', 'STATUS'],
        t.partitions.map((p) => [
          String(p.partition),
          p.leader >= 0 ? String(p.leader) : 'none',
          ids(p.replicas),
          ids(p.isr),
          p.highWatermark === undefined || p.highWatermark === null ? '-' : String(p.highWatermark),
          p.why ? `${p.status} (${p.why})` : p.status,
        ]),
      ),
    );
    out.push('');
  }
  return out.join('\n').trimEnd();
}

export function formatQuorum(q: QuorumDescription): string {
  const leader = q.leaderId > 0 ? String(q.leaderId) : 'none (election in progress)';
  const who = q.servedBy === q.leaderId ? `controller ${q.servedBy}, the leader` : `controller ${q.servedBy}`;
  const view = q.fromLeader ? `as seen by ${who}; match and lag from the leader` : `as seen by ${who}; match and lag unknown (the leader did not answer)`;
  const rows = [
    ...q.voters.map((m) => ['voter', String(m.id), m.address, String(m.matchIndex), String(m.lag), m.id === q.leaderId ? 'leader' : '']),
    ...q.learners.map((m) => ['learner', String(m.id), m.address, String(m.matchIndex), String(m.lag), '']),
  ];
  return [
    `leader: ${leader}  term: ${q.term}  commit index: ${q.commitIndex}  applied: ${q.appliedIndex}  snapshot: ${q.snapshotIndex}`,
    `(${view})`,
    table(['ROLE', 'ID', 'ADDRESS', 'MATCH', 'LAG', ''], rows),
  ].join('\n');
}

export function formatCluster(c: ClusterDescription): string {
  const head = `active controller: ${c.controllerId}`;
  if (c.brokers.length === 0) return `${head}\nno brokers registered`;
  return [
    head,
    table(
      ['BROKER', 'ADDRESS', 'RACK', 'STATE', 'EPOCH'],
      c.brokers.map((b) => [String(b.id), `${b.host}:${b.port}`, b.rack ?? '-', b.fenced ? 'fenced' : 'active', String(b.epoch)]),
    ),
  ].join('\n');
}

export function formatEvent(e: ClusterEvent): string {
  return `${e.offset}  ${new Date(e.timestampMs).toISOString()}  ${e.text}`;
}
