// Preloaded into the router by bench/gc-pauses.ts --alloc-sites (node
// --import): V8's sampling heap profiler from start, collected objects
// included, so it counts everything allocated; on SIGUSR2 it writes the share
// of allocation by the nearest switchyard frame (src/...) and by the top
// three frames to $ALLOC_SITES_OUT.
import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';

interface Frame { functionName: string; url: string; lineNumber: number }
interface Node { callFrame: Frame; selfSize: number; children: Node[] }

const out = process.env['ALLOC_SITES_OUT'];
if (out !== undefined) {
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.startSampling', { samplingInterval: 2048, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  process.on('SIGUSR2', () => {
    void session.post('HeapProfiler.stopSampling').then(({ profile }) => {
      const top = new Map<string, number>();
      const nearest = new Map<string, number>();
      let total = 0;
      const add = (m: Map<string, number>, k: string, v: number): void => { m.set(k, (m.get(k) ?? 0) + v); };
      const walk = (node: Node, stack: string[]): void => {
        const f = node.callFrame;
        const here = [...stack, `${f.functionName || '(anon)'} ${f.url.replace(/^.*\/(src|node_modules)\//, '$1/').replace(/^node:/, '')}:${f.lineNumber + 1}`];
        if (node.selfSize > 0) {
          total += node.selfSize;
          add(top, here.slice(-3).reverse().join(' < '), node.selfSize);
          add(nearest, here.findLast((x) => x.includes(' src/')) ?? '(no switchyard frame)', node.selfSize);
        }
        for (const c of node.children) walk(c, here);
      };
      walk(profile.head as Node, []);
      const fmt = (m: Map<string, number>): string => [...m].sort((a, b) => b[1] - a[1]).slice(0, 30)
        .map(([k, v]) => `${(100 * v / total).toFixed(1).padStart(5)}%  ${k}`).join('\n');
      writeFileSync(out, `sampled ${(total / 2 ** 20).toFixed(1)} MB of allocation\n\nby nearest switchyard frame:\n${fmt(nearest)}\n\nby top three frames:\n${fmt(top)}\n`);
    });
  });
}
