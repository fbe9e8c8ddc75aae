// Messages between the config loader (main thread) and the config worker.
import type { ConfigIssue, ConfigSource } from './model.ts';

/** `known`: fingerprints of the routes the main thread already has; those are not sent back. */
export type WorkerRequest = { readonly id: number; readonly sources: readonly ConfigSource[]; readonly known: readonly string[] };
// The config travels as JSON text: a string crosses threads as one copy,
// where a structured clone of ~20,000 objects would be rebuilt object by
// object on the main thread, stalling it. Of the routes, only those the main
// thread does not have yet are sent, plus every route's fingerprint in order;
// `effective` holds the other sections only (its routes are config's).
export type WorkerReply =
  | {
    readonly id: number; readonly config: string; readonly fingerprints: readonly string[];
    readonly effective: string; readonly version: string; readonly files: readonly string[];
  }
  | { readonly id: number; readonly issues: readonly ConfigIssue[] };
