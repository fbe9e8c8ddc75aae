// gRPC test peers: a grpc-js server implementing test/proto/test.proto, a
// grpc-js client for it, raw node:http2 peers for what grpc-js hides (pseudo-
// headers, te, request trailers, resets), gRPC message framing, and grpcurl.
// Every peer listens on 127.0.0.1 with a port the OS picks. Nothing is mocked.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import http2, {
  type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream,
} from 'node:http2';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { findGoTool } from './go-tools.ts';
import { ROOT } from './helpers.ts';

export const PROTO_DIR = join(ROOT, 'test/proto');
export const PROTO_FILE = 'test.proto';
/** Fully qualified service name, as in grpcurl's `pkg.Service/Method`. */
export const SERVICE = 'switchyard.test.Echo';
/** Messages up to this size pass both peers (4 MB messages exceed grpc-js's 4 MiB default). */
export const MAX_MESSAGE = 64 * 1024 * 1024;
/** Deadline of every call the helpers make unless told otherwise: no test can hang on a call. */
export const DEFAULT_DEADLINE_MS = 20_000;

const packageDefinition = protoLoader.loadSync(PROTO_FILE, {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
});
const pkg = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  switchyard: { test: { Echo: grpc.ServiceClientConstructor } };
};
const Echo = pkg.switchyard.test.Echo;
const unaryMethod = (packageDefinition[SERVICE] as protoLoader.ServiceDefinition)['Unary']!;

/** switchyard.test.Request as the loader decodes it (every field present). */
export interface Request {
  payload: Buffer;
  tag: string;
  count: number;
  size: number;
  status: number;
  message: string;
  after: number;
  sleep_ms: number;
  hang: boolean;
}
export type RequestIn = Partial<Request>;

/** switchyard.test.Reply as the loader decodes it. */
export interface Reply {
  payload: Buffer;
  tag: string;
  backend: string;
  index: number;
  bytes: number;
  digest: string;
  metadata: Record<string, string>;
  authority: string;
  deadline_ms: number;
}

/** Binary metadata values the backend sends: initial, trailing (OK) and trailing (error). */
export const INITIAL_BIN = Buffer.from([0, 1, 2, 0xfe, 0xff]);
export const TRAILER_BIN = Buffer.from([0xff, 0, 1, 0x80]);
export const DETAIL_BIN = Buffer.from([0xca, 0xfe, 0, 0xba, 0xbe]);

export function sha256(...bufs: Buffer[]): string {
  const h = createHash('sha256');
  for (const b of bufs) h.update(b);
  return h.digest('hex');
}

// --- framing (for raw HTTP/2 peers) ------------------------------------------

/** One gRPC length-prefixed message (uncompressed). */
export function frame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** The messages in a gRPC body. */
export function unframe(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i + 5 <= body.length) {
    const len = body.readUInt32BE(i + 1);
    out.push(body.subarray(i + 5, i + 5 + len));
    i += 5 + len;
  }
  if (i !== body.length) throw new Error(`truncated gRPC body: ${body.length - i} stray bytes`);
  return out;
}

export function encodeRequest(r: RequestIn): Buffer {
  return unaryMethod.requestSerialize(r);
}
export function decodeRequest(b: Buffer): Request {
  return unaryMethod.requestDeserialize(b) as Request;
}
export function encodeReply(r: Partial<Reply>): Buffer {
  return unaryMethod.responseSerialize(r);
}
export function decodeReply(b: Buffer): Reply {
  return unaryMethod.responseDeserialize(b) as Reply;
}

// --- grpc-js backend -----------------------------------------------------------

export interface GrpcBackend {
  readonly name: string;
  readonly port: number;
  /** http://127.0.0.1:PORT, a route's backend url. */
  readonly url: string;
  /** 127.0.0.1:PORT, a grpc-js / grpcurl target. */
  readonly target: string;
  readonly server: grpc.Server;
  /** Calls started so far. */
  calls: number;
  /** Calls started and not yet ended (by status, cancel, reset or deadline). */
  openCalls: number;
  /** Calls that ended without the handler sending a status: cancelled by the client, reset, or past their deadline. */
  cancelled: number;
  /** Calls started per method name (Unary, ServerStream, ...). */
  readonly byMethod: Record<string, number>;
  close(): void;
}

export interface GrpcBackendOptions {
  /** Extra grpc.Server options. */
  serverOptions?: grpc.ServerOptions;
}

/** Resolves on the first of `events`, removing every listener it added. */
export function firstOf(emitter: NodeJS.EventEmitter, events: string[]): Promise<string> {
  return new Promise((resolve) => {
    const fns = events.map((e) => {
      const fn = (): void => {
        events.forEach((x, i) => emitter.off(x, fns[i]!));
        resolve(e);
      };
      return fn;
    });
    events.forEach((e, i) => emitter.once(e, fns[i]!));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Request metadata as a plain record: binary values base64, repeated values joined with ", ". */
export function metadataRecord(md: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, values] of Object.entries(md.toJSON())) {
    out[k] = values.map((v) => (Buffer.isBuffer(v) ? v.toString('base64') : v)).join(', ');
  }
  return out;
}

function deadlineMs(call: { getDeadline(): grpc.Deadline }): number {
  const d = call.getDeadline();
  const t = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(t) ? t - Date.now() : -1;
}

/**
 * A grpc-js server for switchyard.test.Echo. Every call gets initial metadata
 * `x-backend: NAME`, `x-initial-bin` and the request's `x-echo` values; an OK
 * call ends with trailers `x-trailer: done NAME`, `x-trailer-bin`,
 * `x-echo-trailer`; an error status (Request.status) ends with `x-detail:
 * detail from NAME`, `x-detail-bin` and, when no reply was sent, as a
 * Trailers-Only response. The first reply of every call carries the metadata,
 * :authority and deadline the server saw.
 */
export async function startGrpcBackend(name: string, opts: GrpcBackendOptions = {}): Promise<GrpcBackend> {
  const b = {
    name, port: 0, url: '', target: '', calls: 0, openCalls: 0, cancelled: 0,
    byMethod: {} as Record<string, number>,
  } as GrpcBackend & { server: grpc.Server };

  // Counts every call the server sees, whatever its handler does. grpc-js calls
  // onCancel once when a call ends, however it ends.
  const counter: grpc.ServerInterceptor = (method, call) => {
    let statusSent = false;
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        b.calls++;
        b.openCalls++;
        const m = method.path.slice(method.path.lastIndexOf('/') + 1);
        b.byMethod[m] = (b.byMethod[m] ?? 0) + 1;
        next({
          onCancel: () => {
            b.openCalls--;
            if (!statusSent) b.cancelled++;
          },
        });
      },
      sendStatus: (status, next) => {
        statusSent = true;
        next(status);
      },
    });
  };

  const initial = (md: grpc.Metadata): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('x-backend', name);
    m.set('x-initial-bin', INITIAL_BIN);
    for (const v of md.get('x-echo')) m.add('x-echo', v);
    return m;
  };
  const trailing = (md: grpc.Metadata): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('x-trailer', `done ${name}`);
    m.set('x-trailer-bin', TRAILER_BIN);
    for (const v of md.get('x-echo')) m.add('x-echo-trailer', v);
    return m;
  };
  const failure = (req: Request, md: grpc.Metadata): Partial<grpc.StatusObject> => {
    const m = new grpc.Metadata();
    m.set('x-detail', `detail from ${name}`);
    m.set('x-detail-bin', DETAIL_BIN);
    for (const v of md.get('x-echo')) m.add('x-echo-trailer', v);
    return { code: req.status, details: req.message, metadata: m };
  };
  type ServerCall = grpc.ServerUnaryCall<Request, Reply> | grpc.ServerWritableStream<Request, Reply> |
    grpc.ServerReadableStream<Request, Reply> | grpc.ServerDuplexStream<Request, Reply>;
  const reply = (call: ServerCall, fields: Partial<Reply>, first: boolean): Reply => ({
    payload: Buffer.alloc(0), tag: '', index: 0, bytes: 0, digest: '',
    ...fields,
    backend: name,
    metadata: first ? metadataRecord(call.metadata) : {},
    authority: first ? call.getHost() : '',
    deadline_ms: first ? deadlineMs(call) : 0,
  });
  const payloadFor = (req: Request): Buffer => (req.size > 0 ? Buffer.alloc(req.size, 0x61) : req.payload);

  /** Writes with backpressure; stops early (false) once the call is cancelled. */
  async function write(call: grpc.ServerWritableStream<Request, Reply> | grpc.ServerDuplexStream<Request, Reply>, r: Reply): Promise<boolean> {
    if (call.cancelled) return false;
    if (!call.write(r)) {
      await firstOf(call, ['drain', 'cancelled']);
    }
    return !call.cancelled;
  }

  const impl: grpc.UntypedServiceImplementation = {
    Unary: (call: grpc.ServerUnaryCall<Request, Reply>, cb: grpc.sendUnaryData<Reply>) => {
      const req = call.request;
      void sleep(req.sleep_ms).then(() => {
        if (call.cancelled || req.hang) return;
        if (req.status !== 0) {
          cb(failure(req, call.metadata)); // no metadata sent: Trailers-Only
          return;
        }
        call.sendMetadata(initial(call.metadata));
        cb(null, reply(call, { payload: payloadFor(req), tag: req.tag }, true), trailing(call.metadata));
      });
    },

    ServerStream: (call: grpc.ServerWritableStream<Request, Reply>) => {
      const req = call.request;
      void (async () => {
        await sleep(req.sleep_ms);
        if (call.cancelled) return;
        if (req.status !== 0 && req.after === 0) {
          call.emit('error', failure(req, call.metadata));
          return;
        }
        call.sendMetadata(initial(call.metadata));
        const n = req.status !== 0 ? req.after : req.count;
        const payload = payloadFor(req);
        for (let i = 0; i < n; i++) {
          if (!await write(call, reply(call, { payload, tag: req.tag, index: i }, i === 0))) return;
        }
        if (req.hang) return;
        if (req.status !== 0) call.emit('error', failure(req, call.metadata));
        else call.end(trailing(call.metadata));
      })();
    },

    ClientStream: (call: grpc.ServerReadableStream<Request, Reply>, cb: grpc.sendUnaryData<Reply>) => {
      let n = 0;
      let bytes = 0;
      let first: Request | undefined;
      let last: Request | undefined;
      const hash = createHash('sha256');
      call.on('data', (r: Request) => {
        n++;
        bytes += r.payload.length;
        hash.update(r.payload);
        first ??= r;
        last = r;
      });
      call.on('end', () => {
        const req = first;
        void sleep(req?.sleep_ms ?? 0).then(() => {
          if (call.cancelled || req?.hang === true) return;
          if (req !== undefined && req.status !== 0) {
            cb(failure(req, call.metadata));
            return;
          }
          call.sendMetadata(initial(call.metadata));
          cb(null, reply(call, { tag: last?.tag ?? '', index: n, bytes, digest: hash.digest('hex') }, true), trailing(call.metadata));
        });
      });
    },

    BidiStream: (call: grpc.ServerDuplexStream<Request, Reply>) => {
      let i = 0;
      let stopped = false;
      // Replies go out one at a time, in order, with backpressure on the reads.
      let chain = Promise.resolve();
      call.on('data', (r: Request) => {
        if (stopped) return;
        if (r.hang) {
          stopped = true;
          return;
        }
        if (r.status !== 0) {
          stopped = true;
          chain = chain.then(() => { call.emit('error', failure(r, call.metadata)); });
          return;
        }
        const index = i++;
        if (index === 0) call.sendMetadata(initial(call.metadata));
        call.pause();
        chain = chain.then(async () => {
          if (index === 0) await sleep(r.sleep_ms);
          if (await write(call, reply(call, { payload: payloadFor(r), tag: r.tag, index }, index === 0))) call.resume();
        });
      });
      call.on('end', () => {
        chain = chain.then(() => { if (!stopped && !call.cancelled) call.end(trailing(call.metadata)); });
      });
    },
  };

  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
    ...opts.serverOptions,
    interceptors: [counter],
  });
  server.addService(Echo.service, impl);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  Object.assign(b, {
    server, port, url: `http://127.0.0.1:${port}`, target: `127.0.0.1:${port}`,
    close: () => { server.forceShutdown(); },
  });
  return b;
}

// --- grpc-js client ------------------------------------------------------------

/** The generated client, typed enough for the tests. */
export interface EchoClient extends grpc.Client {
  Unary(req: RequestIn, metadata: grpc.Metadata, options: grpc.CallOptions, cb: grpc.requestCallback<Reply>): grpc.ClientUnaryCall;
  ServerStream(req: RequestIn, metadata: grpc.Metadata, options: grpc.CallOptions): grpc.ClientReadableStream<Reply>;
  ClientStream(metadata: grpc.Metadata, options: grpc.CallOptions, cb: grpc.requestCallback<Reply>): grpc.ClientWritableStream<RequestIn>;
  BidiStream(metadata: grpc.Metadata, options: grpc.CallOptions): grpc.ClientDuplexStream<RequestIn, Reply>;
}

export interface ClientOptions {
  /** An independent connection instead of grpc-js's process-wide shared subchannel. */
  localPool?: boolean;
  channelOptions?: grpc.ChannelOptions;
}

/**
 * A client for `target` (http://127.0.0.1:PORT or 127.0.0.1:PORT) that sends
 * `authority` as :authority, so the router picks the route by it.
 */
export function grpcClient(target: string, authority: string | undefined, opts: ClientOptions = {}): EchoClient {
  const address = target.replace(/^https?:\/\//, '').replace(/\/$/, '');
  return new Echo(address, grpc.credentials.createInsecure(), {
    ...(authority !== undefined ? { 'grpc.default_authority': authority } : {}),
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
    ...(opts.localPool === true ? { 'grpc.use_local_subchannel_pool': 1 } : {}),
    ...opts.channelOptions,
  }) as unknown as EchoClient;
}

export type MetadataInit = Record<string, string | Buffer | (string | Buffer)[]>;

export function metadata(init: MetadataInit = {}): grpc.Metadata {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(init)) for (const x of Array.isArray(v) ? v : [v]) m.add(k, x);
  return m;
}

export interface CallOpts {
  metadata?: MetadataInit;
  /** Milliseconds from now; default DEFAULT_DEADLINE_MS. */
  deadlineMs?: number;
}

function callOptions(o: CallOpts): grpc.CallOptions {
  return { deadline: Date.now() + (o.deadlineMs ?? DEFAULT_DEADLINE_MS) };
}

/** How a call ended, as the client saw it. Helpers resolve with this and never reject. */
export interface CallResult {
  code: number;
  details: string;
  replies: Reply[];
  /** Initial (response header) metadata, if any arrived. */
  initial: grpc.Metadata | undefined;
  /** Trailing metadata from the status. */
  trailing: grpc.Metadata;
  ms: number;
}

type AnyClientCall = grpc.ClientUnaryCall | grpc.ClientReadableStream<Reply> | grpc.ClientWritableStream<RequestIn> | grpc.ClientDuplexStream<RequestIn, Reply>;

/**
 * Collects a call's metadata, replies and status. Resolves once the status is
 * in and, for calls that read replies, the reply stream has ended too.
 */
export function collect(c: AnyClientCall, replies: Reply[] = [], readsReplies = false): Promise<CallResult> {
  const start = performance.now();
  // The union's overloaded `on` signatures do not combine; all of them are EventEmitters.
  const call = c as unknown as NodeJS.EventEmitter;
  return new Promise((resolve) => {
    let initial: grpc.Metadata | undefined;
    let status: grpc.StatusObject | undefined;
    let ended = !readsReplies;
    const finish = (): void => {
      if (status === undefined || !ended) return;
      resolve({ code: status.code, details: status.details, replies, initial, trailing: status.metadata, ms: performance.now() - start });
    };
    call.on('metadata', (m: grpc.Metadata) => { initial = m; });
    call.on('status', (s: grpc.StatusObject) => { status = s; finish(); });
    // Errors are reported by the status; a listener keeps them from throwing.
    call.on('error', () => { ended = true; finish(); });
    if (readsReplies) {
      call.on('data', (r: Reply) => { replies.push(r); });
      call.on('end', () => { ended = true; finish(); });
    }
  });
}

export function unary(client: EchoClient, req: RequestIn, o: CallOpts = {}): Promise<CallResult> {
  const replies: Reply[] = [];
  const call = client.Unary(req, metadata(o.metadata), callOptions(o), (err, r) => {
    if (err === null && r !== undefined) replies.push(r);
  });
  return collect(call, replies);
}

export function serverStream(client: EchoClient, req: RequestIn, o: CallOpts = {}): Promise<CallResult> {
  return collect(client.ServerStream(req, metadata(o.metadata), callOptions(o)), [], true);
}

/** Writes `n` requests made by `make(i)` with backpressure, then half-closes. */
async function writeAll(call: grpc.ClientWritableStream<RequestIn> | grpc.ClientDuplexStream<RequestIn, Reply>, n: number, make: (i: number) => RequestIn): Promise<void> {
  let failed = false;
  const stop = (): void => { failed = true; };
  call.once('error', stop);
  call.once('status', stop);
  for (let i = 0; i < n && !failed; i++) {
    if (!call.write(make(i))) {
      await firstOf(call as unknown as NodeJS.EventEmitter, ['drain', 'status', 'close', 'error']);
    }
  }
  if (!failed) call.end();
}

export function clientStream(client: EchoClient, n: number, make: (i: number) => RequestIn, o: CallOpts = {}): Promise<CallResult> {
  const replies: Reply[] = [];
  const call = client.ClientStream(metadata(o.metadata), callOptions(o), (err, r) => {
    if (err === null && r !== undefined) replies.push(r);
  });
  const done = collect(call, replies);
  void writeAll(call, n, make);
  return done;
}

export function bidi(client: EchoClient, n: number, make: (i: number) => RequestIn, o: CallOpts = {}): Promise<CallResult> {
  const call = client.BidiStream(metadata(o.metadata), callOptions(o));
  const done = collect(call, [], true);
  void writeAll(call, n, make);
  return done;
}

/** Polls `cond` until it holds or `ms` pass; returns its last value. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 5_000, step = 20): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await sleep(step);
  }
}

// --- raw HTTP/2 peers ---------------------------------------------------------

export type H2Handler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, backend: H2Backend) => void;

export interface H2Backend {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly server: http2.Http2Server;
  /** Streams this backend has seen. */
  streams: number;
  /** Request headers and trailers of every stream, in arrival order. */
  readonly seen: { headers: IncomingHttpHeaders; trailers?: IncomingHttpHeaders; body?: Buffer }[];
  close(): Promise<void>;
}

/** A node:http2 cleartext server (prior knowledge) with a hand-written stream handler. */
export async function startH2Backend(name: string, handler: H2Handler): Promise<H2Backend> {
  const server = http2.createServer({ settings: { initialWindowSize: 1 << 20 } });
  const sessions = new Set<ServerHttp2Session>();
  const b = { name, port: 0, url: '', server, streams: 0, seen: [] } as unknown as H2Backend & { port: number; url: string };
  server.on('session', (s) => {
    sessions.add(s);
    s.on('error', () => {});
    s.once('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    b.streams++;
    stream.on('error', () => {});
    handler(stream, headers, b);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  Object.assign(b, {
    port, url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      for (const s of sessions) s.destroy();
      server.close(() => resolve());
    }),
  });
  return b;
}

/** Reads a server stream's whole body and its trailers, if any. */
export function readRequest(stream: ServerHttp2Stream): Promise<{ body: Buffer; trailers: IncomingHttpHeaders | undefined }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let trailers: IncomingHttpHeaders | undefined;
    stream.on('trailers', (t: IncomingHttpHeaders) => { trailers = t; });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ body: Buffer.concat(chunks), trailers }));
    stream.on('error', reject);
  });
}

export interface H2Response {
  headers: IncomingHttpHeaders;
  /** END_STREAM was set on the response HEADERS frame (a Trailers-Only response for gRPC). */
  endStreamOnHeaders: boolean;
  body: Buffer;
  trailers: IncomingHttpHeaders | undefined;
  /** RST_STREAM code the stream closed with (0 for a clean end). */
  rstCode: number;
  error: Error | undefined;
}

export interface H2RequestOptions {
  body?: Buffer;
  /** Sent as request trailers after the body. */
  trailers?: OutgoingHttpHeaders;
  timeoutMs?: number;
}

/** One request on a fresh HTTP/2 prior-knowledge connection; resolves when the stream closes. */
export async function h2Request(url: string, headers: OutgoingHttpHeaders, opts: H2RequestOptions = {}): Promise<H2Response> {
  const session: ClientHttp2Session = http2.connect(url);
  session.on('error', () => {});
  try {
    const waitForTrailers = opts.trailers !== undefined;
    const stream = session.request(headers, { endStream: opts.body === undefined && !waitForTrailers, waitForTrailers });
    if (waitForTrailers) stream.once('wantTrailers', () => stream.sendTrailers(opts.trailers!));
    const res: H2Response = { headers: {}, endStreamOnHeaders: false, body: Buffer.alloc(0), trailers: undefined, rstCode: 0, error: undefined };
    const chunks: Buffer[] = [];
    stream.on('response', (h, flags) => {
      res.headers = h;
      res.endStreamOnHeaders = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.on('trailers', (t) => { res.trailers = t; });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', (e: Error) => { res.error = e; });
    if (opts.body !== undefined) stream.end(opts.body);
    else if (waitForTrailers) stream.end();
    const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), opts.timeoutMs ?? 10_000);
    await once(stream, 'close');
    clearTimeout(timer);
    res.body = Buffer.concat(chunks);
    res.rstCode = stream.rstCode ?? 0;
    return res;
  } finally {
    session.close();
  }
}

// --- grpcurl -------------------------------------------------------------------

/** grpcurl, a gRPC client we did not write: $GRPCURL, else where `go install` put it. */
export function findGrpcurl(): string | undefined {
  return findGoTool('grpcurl', 'GRPCURL');
}

/** Arguments for `grpcurl` calling `method` of the test service at 127.0.0.1:port. */
export function grpcurlArgs(port: number, method: string, opts: { authority?: string; data?: string; headers?: string[] } = {}): string[] {
  const args = ['-plaintext', '-max-time', '10', '-import-path', PROTO_DIR, '-proto', PROTO_FILE];
  if (opts.authority !== undefined) args.push('-authority', opts.authority);
  for (const h of opts.headers ?? []) args.push('-H', h);
  if (opts.data !== undefined) args.push('-d', opts.data);
  args.push(`127.0.0.1:${port}`, `${SERVICE}/${method}`);
  return args;
}

/** grpcurl's output: a sequence of pretty-printed JSON objects. */
export function parseJsonStream(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{') {
      if (depth++ === 0) start = i;
    } else if (c === '}' && --depth === 0) {
      out.push(JSON.parse(text.slice(start, i + 1)) as Record<string, unknown>);
    }
  }
  return out;
}

export { grpc };
