import * as fs from 'node:fs';
import * as path from 'node:path';

// Summarises V8 .cpuprofile files (node --cpu-prof): self time by function (file:line
// function) and by file, as a share of the samples. Used to say where a benchmark's CPU goes
// without opening a profiler UI.
//
// Usage: node dist/bench/cpuprofile-top.js <file-or-dir>... [--top 25] [--skip-s 0]
//   --skip-s: ignore the first seconds of each profile (start-up, warm-up).
//   A directory means every .cpuprofile in it, each summarised on its own.

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: number[];
}
interface Profile {
  readonly nodes: ProfileNode[];
  readonly samples: number[];
  readonly timeDeltas: number[];
  readonly startTime: number;
  readonly endTime: number;
}

export interface ProfileSummary {
  readonly file: string;
  readonly durationMs: number;
  /** Share of samples not idle, not GC, not "(program)": JavaScript and native work on the main thread. */
  readonly busyShare: number;
  readonly gcShare: number;
  readonly topFunctions: { readonly name: string; readonly share: number }[];
  readonly topFiles: { readonly file: string; readonly share: number }[];
  /**
   * Inclusive time of the project's own functions (files under broker/, client/, shared/,
   * controller/, bench/): each sample counts once for every distinct such frame on its stack.
   * Says which of our functions the time is spent under, whatever library does the work.
   */
  readonly topProjectInclusive: { readonly name: string; readonly share: number }[];
  /** Inclusive time by npm package or node: module (each sample once per distinct one on its stack). */
  readonly topModulesInclusive: { readonly module: string; readonly share: number }[];
}

const PROJECT = /^(broker|client|shared|controller|bench|cli)\//;

function moduleOf(f: string): string | undefined {
  if (f.startsWith('node:')) return f.split('/').slice(0, 3).join('/');
  if (PROJECT.test(f) || f === '(native)') return undefined;
  const parts = f.split('/');
  return parts[0]!.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

function shortUrl(url: string): string {
  if (!url) return '(native)';
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) return u.slice(nm + 'node_modules/'.length);
  const dist = u.lastIndexOf('/dist/');
  if (dist >= 0) return u.slice(dist + '/dist/'.length);
  return u.startsWith('node:') ? u : path.basename(u);
}

export function summarise(file: string, top = 25, skipMs = 0): ProfileSummary {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Time per sample: the delta to the next sample (V8's convention).
  const selfUs = new Map<number, number>();
  let atUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    atUs += p.timeDeltas[i] ?? 0;
    if (atUs < skipMs * 1000) continue;
    const dt = p.timeDeltas[i + 1] ?? 0;
    selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
  }
  let total = 0;
  let idle = 0;
  let gc = 0;
  const fn = new Map<string, number>();
  const files = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const cf = byId.get(id)!.callFrame;
    total += us;
    if (cf.functionName === '(idle)') {
      idle += us;
      continue;
    }
    if (cf.functionName === '(garbage collector)') gc += us;
    const f = shortUrl(cf.url);
    const name = `${f}:${cf.lineNumber + 1} ${cf.functionName || '(anonymous)'}`;
    fn.set(name, (fn.get(name) ?? 0) + us);
    files.set(f, (files.get(f) ?? 0) + us);
  }
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  const mods = new Map<string, number>();
  for (const [id, us] of selfUs) {
    if (byId.get(id)!.callFrame.functionName === '(idle)') continue;
    const seen = new Set<string>();
    const seenMods = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const cf = byId.get(at)!.callFrame;
      const f = shortUrl(cf.url);
      if (PROJECT.test(f)) seen.add(`${f}:${cf.lineNumber + 1} ${cf.functionName || '(anonymous)'}`);
      const m = moduleOf(f);
      if (m) seenMods.add(m);
    }
    for (const k of seen) incl.set(k, (incl.get(k) ?? 0) + us);
    for (const k of seenMods) mods.set(k, (mods.get(k) ?? 0) + us);
  }
  const share = (us: number): number => Math.round((us / Math.max(1, total)) * 1000) / 10;
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
  return {
    file,
    durationMs: Math.round((p.endTime - p.startTime) / 1000 - skipMs),
    busyShare: share(total - idle),
    gcShare: share(gc),
    topFunctions: sorted(fn).map(([name, us]) => ({ name, share: share(us) })),
    topFiles: sorted(files).map(([f, us]) => ({ file: f, share: share(us) })),
    topProjectInclusive: sorted(incl).map(([name, us]) => ({ name, share: share(us) })),
    topModulesInclusive: sorted(mods).map(([module, us]) => ({ module, share: share(us) })),
  };
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  const topIdx = argv.indexOf('--top');
  const top = topIdx >= 0 ? Number(argv[topIdx + 1]) : 25;
  const skipIdx = argv.indexOf('--skip-s');
  const skipMs = skipIdx >= 0 ? Number(argv[skipIdx + 1]) * 1000 : 0;
  const flagged = new Set<number>();
  for (const i of [topIdx, skipIdx]) if (i >= 0) flagged.add(i).add(i + 1);
  const inputs = argv.filter((_, i) => !flagged.has(i));
  const files = inputs.flatMap((a) =>
    fs.statSync(a).isDirectory() ? fs.readdirSync(a).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(a, f)) : [a],
  );
  for (const f of files) {
    const s = summarise(f, top, skipMs);
    console.log(`\n== ${f}: ${s.durationMs} ms, busy ${s.busyShare} % (GC ${s.gcShare} %) of samples`);
    console.log('  self time by function (% of all samples):');
    for (const t of s.topFunctions) console.log(`    ${t.share.toFixed(1).padStart(5)} %  ${t.name}`);
    console.log('  self time by file:');
    for (const t of s.topFiles.slice(0, 15)) console.log(`    ${t.share.toFixed(1).padStart(5)} %  ${t.file}`);
    console.log('  inclusive, our functions (time spent under each):');
    for (const t of s.topProjectInclusive) console.log(`    ${t.share.toFixed(1).padStart(5)} %  ${t.name}`);
    console.log('  inclusive, by library / node module:');
    for (const t of s.topModulesInclusive.slice(0, 15)) console.log(`    ${t.share.toFixed(1).padStart(5)} %  ${t.module}`);
  }
}
