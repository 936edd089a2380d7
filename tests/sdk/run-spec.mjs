#!/usr/bin/env node
// Runs one Unleash client-specification file through the official Node SDK
// (unleash-client, unmodified) against a live server that already serves the
// file's state for the given token.
//
//   node tests/sdk/run-spec.mjs --url http://127.0.0.1:4242/api/ --token TOKEN --spec 08-variants.json
//
// Prints exactly one JSON line to stdout:
//   {"file", "passed", "failed", "failures": [{description, toggleName, expected, got}],
//    "sdkErrors": [...], "sdkWarnings": [...], "registered", "metricsSent", "revalidation"}
// and exits 0. Case failures are data, not errors: the caller decides which are
// acceptable. Exit code 2 means the harness itself failed (bad arguments, no
// synchronisation within the timeout, 401/403, connection refused); the reason
// goes to stderr.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { InMemStorageProvider, Unleash } from 'unleash-client';

const HARNESS_ERROR = 2;

function die(message) {
  process.stderr.write(`run-spec: ${message}\n`);
  process.exit(HARNESS_ERROR);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      url: { type: 'string' },
      token: { type: 'string' },
      spec: { type: 'string' },
      'timeout-ms': { type: 'string', default: '10000' },
      'refresh-ms': { type: 'string', default: '300' },
    },
    strict: true,
  }));
} catch (e) {
  die(e.message);
}
if (!args.url || !args.token || !args.spec) {
  die('usage: run-spec.mjs --url http://HOST:PORT/api/ --token TOKEN --spec FILE.json');
}
const timeoutMs = Number(args['timeout-ms']);
// Short, so that a second poll (the ETag revalidation) happens within the run.
const refreshMs = Number(args['refresh-ms']);

const spec = JSON.parse(readFileSync(args.spec, 'utf8'));
const file = basename(args.spec);

// Everything the SDK complains about is collected: an `error` event after a
// successful fetch usually means the payload shape is off (e.g. validateFeature).
const sdkErrors = [];
const sdkWarnings = [];
let registered = false;
let metricsSent = false;

const unleash = new Unleash({
  // The URL ends in `/api/`: the SDK resolves `./client/features` against it.
  url: args.url,
  appName: 'fusebox-sdk-conformance',
  instanceId: `run-spec-${file}`,
  customHeaders: { Authorization: args.token },
  refreshInterval: refreshMs,
  // Metrics stay on so that /client/register and /client/metrics are exercised
  // too; the interval is long, the bucket is flushed explicitly at the end.
  disableMetrics: false,
  metricsInterval: 60_000,
  // No backup file in the OS temp directory, no state shared between runs.
  storageProvider: new InMemStorageProvider(),
  skipInstanceCountWarning: true,
});

unleash.on('error', (e) => sdkErrors.push(String(e?.message ?? e)));
unleash.on('warn', (w) => sdkWarnings.push(String(w?.message ?? w)));
unleash.on('registered', () => {
  registered = true;
});
unleash.on('sent', () => {
  metricsSent = true;
});

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// `synchronized` fires on the first successful fetch from the server (not from a
// bootstrap or backup), which is exactly what this harness is about. A 401/403 or
// a refused connection only shows up as an `error` event, so the first error
// before synchronisation is fatal instead of waiting for the full timeout.
const synchronized = new Promise((resolve, reject) => {
  unleash.once('synchronized', resolve);
  unleash.once('error', (e) => {
    if (!unleash.isSynchronized()) reject(e);
  });
});

try {
  await withTimeout(synchronized, timeoutMs, `'synchronized' from ${args.url}`);
} catch (e) {
  unleash.destroy();
  die(`${file}: the SDK never synchronised: ${e?.message ?? e}`);
}

// The next poll carries the ETag of the first 200 as If-None-Match; nothing has
// changed, so a server with stable ETags answers 304 (`unchanged`). A second 200
// (`changed`) still works but means revalidation is not used. Listening starts
// here, before evaluating, so that a poll during the evaluation is not missed
// (the first fetch's `changed` fired before `synchronized`).
const secondPoll = new Promise((resolve) => {
  unleash.once('unchanged', () => resolve('304'));
  unleash.once('changed', () => resolve('200'));
});

const failures = [];
let passed = 0;

function check(description, toggleName, expected, got, ok) {
  if (ok) {
    passed += 1;
  } else {
    failures.push({ description, toggleName, expected, got });
  }
}

for (const t of spec.tests ?? []) {
  const got = unleash.isEnabled(t.toggleName, t.context);
  check(t.description, t.toggleName, t.expectedResult, got, got === t.expectedResult);
}

for (const t of spec.variantTests ?? []) {
  const variant = unleash.getVariant(t.toggleName, t.context);
  const expected = t.expectedResult;
  // 6.12.1 returns both `feature_enabled` (the spec's name) and a deprecated
  // `featureEnabled` copy; the spec's value is compared with `feature_enabled`.
  const got = {
    name: variant.name,
    enabled: variant.enabled,
    feature_enabled: variant.feature_enabled,
    ...(variant.payload === undefined ? {} : { payload: variant.payload }),
  };
  const ok =
    got.name === expected.name &&
    got.enabled === expected.enabled &&
    got.feature_enabled === expected.feature_enabled &&
    isDeepStrictEqual(got.payload, expected.payload);
  check(t.description, t.toggleName, expected, got, ok);
}

let revalidation = 'none';
try {
  revalidation = await withTimeout(secondPoll, refreshMs * 3 + 5000, 'the second poll');
} catch {
  // Stays 'none'; the caller decides.
}

// The evaluations above filled the metrics bucket; send it now rather than
// after metricsInterval. `sent` fires only on a 2xx.
try {
  await withTimeout(unleash.flushMetrics(), timeoutMs, 'POST /client/metrics');
} catch (e) {
  sdkErrors.push(`metrics flush: ${e?.message ?? e}`);
}
unleash.destroy();

process.stdout.write(
  `${JSON.stringify({
    file,
    passed,
    failed: failures.length,
    failures,
    sdkErrors,
    sdkWarnings,
    registered,
    metricsSent,
    revalidation,
  })}\n`,
);
// Timers are unref'd and destroy() stops them, but an in-flight keep-alive socket
// could still hold the loop open for a while; the result is out, so leave now.
process.exit(0);
