// A reader and writer for etcd-style data-driven files (cockroachdb/datadriven, as used
// by etcd-io/raft/testdata): blocks of
//
//   # comments and blank lines
//   command args...
//   ----
//   expected output, ended by a blank line or the end of the file
//
// Output that itself contains blank lines is fenced by a doubled separator:
//   ----
//   ----
//   output
//
//   more output
//   ----
//   ----

export interface Block {
  /** Comment and blank lines before the command, kept verbatim on rewrite. */
  readonly preamble: string[];
  readonly command: string;
  /** 1-based line of the command, for error messages. */
  readonly line: number;
  readonly expected: string;
}

export interface DataFile {
  readonly blocks: Block[];
  /** Comment lines after the last block. */
  readonly trailer: string[];
}

const SEP = '----';

export function parseDataFile(text: string, name = '<file>'): DataFile {
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  const blocks: Block[] = [];
  let preamble: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const l = lines[i];
    if (l.trim() === '' || l.startsWith('#')) {
      preamble.push(l);
      i++;
      continue;
    }
    const command = l;
    const line = i + 1;
    if (lines[i + 1] !== SEP) throw new Error(`${name}:${line}: expected ${SEP} after the command`);
    i += 2;
    const out: string[] = [];
    if (lines[i] === SEP) {
      i++;
      while (i < lines.length && !(lines[i] === SEP && lines[i + 1] === SEP)) out.push(lines[i++]);
      if (i >= lines.length) throw new Error(`${name}:${line}: unterminated ${SEP}/${SEP} block`);
      i += 2;
    } else {
      while (i < lines.length && lines[i].trim() !== '') out.push(lines[i++]);
    }
    blocks.push({ preamble, command, line, expected: out.join('\n') });
    preamble = [];
  }
  while (preamble.length > 0 && preamble[preamble.length - 1].trim() === '') preamble.pop();
  return { blocks, trailer: preamble };
}

/** The file with each block's output replaced by `outputs[i]`. */
export function formatDataFile(f: DataFile, outputs: readonly string[]): string {
  const parts: string[] = [];
  f.blocks.forEach((b, i) => {
    const pre = [...b.preamble];
    // Exactly one blank line between blocks, whatever the previous output looked like.
    while (i > 0 && pre.length > 0 && pre[0].trim() === '') pre.shift();
    if (i > 0) parts.push('');
    parts.push(...pre, b.command, SEP);
    const o = outputs[i];
    if (o.split('\n').some((l) => l.trim() === '')) parts.push(SEP, o, SEP, SEP);
    else parts.push(o);
  });
  if (f.trailer.length > 0) parts.push('', ...f.trailer.filter((l, k) => k > 0 || l.trim() !== ''));
  return parts.join('\n') + '\n';
}

/** A small line diff (LCS), `-` expected and `+` actual, with two lines of context. */
export function lineDiff(expected: string, actual: string): string {
  const a = expected.split('\n');
  const b = actual.split('\n');
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const ops: { k: ' ' | '-' | '+'; l: string }[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      ops.push({ k: ' ', l: a[i] });
      i++;
      j++;
    } else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) {
      ops.push({ k: '-', l: a[i++] });
    } else {
      ops.push({ k: '+', l: b[j++] });
    }
  }
  const keep = ops.map((o, k) => o.k !== ' ' || ops.slice(Math.max(0, k - 2), k + 3).some((x) => x.k !== ' '));
  const out: string[] = [];
  ops.forEach((o, k) => {
    if (keep[k]) out.push(`${o.k} ${o.l}`);
    else if (k > 0 && keep[k - 1]) out.push('  ...');
  });
  return out.join('\n');
}
