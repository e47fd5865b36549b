// A tiny stand-in for the Hugging Face Hub's `resolve` endpoint, for tests.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubRequest {
  file: string;
  range?: string;
  authorization?: string;
}

export interface FakeHubOptions {
  /** Files by path under `/<org>/<name>/resolve/<revision>/`. */
  files: Record<string, Buffer | string>;
  /** For these files, the first `n` requests send half of what they promise, then drop the connection. */
  cut?: Record<string, number>;
  /** Answer every request with this status instead. */
  status?: number;
  /** Ignore Range headers (always answer 200 with the whole file). */
  ignoreRange?: boolean;
}

export interface FakeHub {
  endpoint: string;
  requests: HubRequest[];
  close(): Promise<void>;
}

export async function startFakeHub(options: FakeHubOptions): Promise<FakeHub> {
  const requests: HubRequest[] = [];
  const cutsLeft = new Map(Object.entries(options.cut ?? {}));
  const server = http.createServer((req, res) => {
    const match = /^\/[^/]+\/[^/]+\/resolve\/[^/]+\/(.+)$/.exec(req.url ?? '');
    const file = match ? decodeURIComponent(match[1]) : '';
    requests.push({ file, range: req.headers.range, authorization: req.headers.authorization });
    if (options.status) {
      res.writeHead(options.status, { 'content-type': 'text/plain' }).end(`status ${options.status}`);
      return;
    }
    const content = options.files[file];
    if (content === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Entry not found');
      return;
    }
    const body = Buffer.isBuffer(content) ? content : Buffer.from(content);
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range && !options.ignoreRange) {
      start = Number(range[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-length': String(body.length - start),
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
      });
    } else {
      res.writeHead(200, { 'content-length': String(body.length) });
    }
    const rest = body.subarray(start);
    const cuts = cutsLeft.get(file) ?? 0;
    if (cuts > 0) {
      cutsLeft.set(file, cuts - 1);
      res.write(rest.subarray(0, Math.floor(rest.length / 2)), () => setTimeout(() => req.socket.destroy(), 50));
      return;
    }
    res.end(rest);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
