#!/usr/bin/env node
// A small load generator for what h2load cannot do: a different request_id in every
// request (fresh CreatePayment), gRPC status read from the trailers (h2load counts an
// HTTP 200 as success whatever grpc-status says), and an open-loop probe at a fixed rate.
//
//   node bench/loadgen.js '<json config>'      -> one JSON line with the results on stdout
//
// Config (bench/run.py writes it):
//   transport   "grpc" (HTTP/2 cleartext, node:http2) | "http" (HTTP/1.1 keep-alive, node:http)
//   host, port, method, path, headers          request line and headers (no per-request ones)
//   body_b64    the request body, pre-built by bench/run.py from payments_pb2 / JSON
//   patch       {offset, width} or null: bytes of the body overwritten with the zero-padded
//               request counter (the counter is also sent as x-request-id); run.py checks that
//               the template differs from a payments_pb2-built body only there
//   expect_status  the HTTP status that counts as success (gRPC: 200 and grpc-status 0)
//   connections, streams   closed loop: connections x streams requests in flight
//                          (HTTP/1.1: streams must be 1; one request per socket at a time)
//   rate        null, or requests/s for an open-loop probe (connections used round-robin)
//   warmup_s, duration_s   requests completing in [warmup, warmup + duration) are measured
//   max_requests  stop after this many requests (verification runs), 0 = by time only
//   counter_start first counter value
'use strict';

const http = require('http');
const http2 = require('http2');

const cfg = JSON.parse(process.argv[2]);
const body0 = Buffer.from(cfg.body_b64 || '', 'base64');
const patch = cfg.patch || null;
const isGrpc = cfg.transport === 'grpc';
const expectStatus = cfg.expect_status || 200;

const t0 = process.hrtime.bigint();
const nowS = () => Number(process.hrtime.bigint() - t0) / 1e9;
const warmEnd = cfg.warmup_s || 0;
const measureEnd = warmEnd + (cfg.duration_s || 0);
const maxRequests = cfg.max_requests || 0;

let counter = cfg.counter_start || 0;
let issued = 0;
let inflight = 0;
let stopping = false;
const latencies = [];          // ms, requests completing in the measured window
const outcomes = {};           // outcome -> count, measured window
const allOutcomes = {};        // outcome -> count, every request (warm-up and drain included)
const bodyLengths = {};        // response body length -> count, successful requests
let measuredFirst = null;
let measuredLast = null;
let maxLagMs = 0;

function nextBody() {
  const id = String(counter++).padStart(patch ? patch.width : 1, '0');
  if (!patch) return [body0, id];
  if (id.length > patch.width) throw new Error('request counter overflowed the patch width');
  const b = Buffer.from(body0);
  b.write(id, patch.offset, patch.width, 'latin1');
  return [b, id];
}

function record(outcome, len, startedS) {
  const endS = nowS();
  allOutcomes[outcome] = (allOutcomes[outcome] || 0) + 1;
  if (endS >= warmEnd && (measureEnd === warmEnd || endS < measureEnd)) {
    outcomes[outcome] = (outcomes[outcome] || 0) + 1;
    latencies.push((endS - startedS) * 1000);
    if (measuredFirst === null) measuredFirst = endS;
    measuredLast = endS;
  }
  if (outcome === 'ok') bodyLengths[len] = (bodyLengths[len] || 0) + 1;
}

// ---- transports ------------------------------------------------------------------

const baseHeaders = Object.assign({}, cfg.headers || {});
let sessions = [];
let agent = null;

function connectGrpc() {
  for (let i = 0; i < cfg.connections; i++) {
    const s = http2.connect(`http://${cfg.host}:${cfg.port}`, { settings: { initialWindowSize: 1 << 22 } });
    s.on('error', (e) => { process.stderr.write(`session error: ${e.message}\n`); });
    sessions.push(s);
  }
}

function sendGrpc(slot, done) {
  const [body, id] = nextBody();
  const startedS = nowS();
  const headers = Object.assign({
    ':method': 'POST', ':path': cfg.path, 'content-type': 'application/grpc', te: 'trailers',
    'x-request-id': 'b' + id,
  }, baseHeaders);
  let grpcStatus = null;
  let httpStatus = 0;
  let len = 0;
  let finished = false;
  const finish = (outcome) => {
    if (finished) return;
    finished = true;
    record(outcome, len, startedS);
    done();
  };
  let req;
  try {
    req = sessions[slot % sessions.length].request(headers);
  } catch (e) {
    finish('client_error:' + e.code);
    return;
  }
  req.on('response', (h) => {
    httpStatus = h[':status'];
    if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']); // trailers-only answer
  });
  req.on('trailers', (t) => { if (t['grpc-status'] !== undefined) grpcStatus = String(t['grpc-status']); });
  req.on('data', (c) => { len += c.length; });
  req.on('error', (e) => finish('stream_error:' + (e.code || e.message)));
  req.on('close', () => {
    if (httpStatus !== 200) finish('http_' + httpStatus);
    else if (grpcStatus === null) finish('no_grpc_status');
    else finish(grpcStatus === '0' ? 'ok' : 'grpc_' + grpcStatus);
  });
  req.end(body);
}

function connectHttp() {
  agent = new http.Agent({ keepAlive: true, maxSockets: cfg.connections, maxFreeSockets: cfg.connections });
}

function sendHttp(slot, done) {
  const [body, id] = nextBody();
  const startedS = nowS();
  const headers = Object.assign({ 'x-request-id': 'b' + id }, baseHeaders);
  if (body.length) headers['content-length'] = body.length;
  let finished = false;
  let len = 0;
  const finish = (outcome) => {
    if (finished) return;
    finished = true;
    record(outcome, len, startedS);
    done();
  };
  const req = http.request({ agent, host: cfg.host, port: cfg.port, method: cfg.method, path: cfg.path, headers }, (res) => {
    res.on('data', (c) => { len += c.length; });
    res.on('end', () => finish(res.statusCode === expectStatus ? 'ok' : 'http_' + res.statusCode));
    res.on('error', (e) => finish('response_error:' + (e.code || e.message)));
  });
  req.on('error', (e) => finish('request_error:' + (e.code || e.message)));
  req.end(body.length ? body : undefined);
}

const send = isGrpc ? sendGrpc : sendHttp;

// ---- drivers ---------------------------------------------------------------------

function shouldIssue() {
  if (stopping) return false;
  if (maxRequests && issued >= maxRequests) return false;
  if (!maxRequests && nowS() >= measureEnd) return false;
  return true;
}

function closedLoop(resolve) {
  const slots = cfg.connections * (isGrpc ? cfg.streams : 1);
  const loop = (slot) => {
    if (!shouldIssue()) {
      if (inflight === 0) resolve();
      return;
    }
    issued++;
    inflight++;
    send(slot, () => {
      inflight--;
      loop(slot);
    });
  };
  for (let i = 0; i < slots; i++) loop(i);
}

function openLoop(resolve) {
  const interval = 1 / cfg.rate;
  let k = 0;
  const tick = () => {
    // Issue every request whose scheduled time has come (catches up after a late timer).
    while (shouldIssue() && k * interval <= nowS()) {
      maxLagMs = Math.max(maxLagMs, (nowS() - k * interval) * 1000);
      k++;
      issued++;
      inflight++;
      send(k, () => {
        inflight--;
        if (!shouldIssue() && inflight === 0) resolve();
      });
    }
    if (shouldIssue()) setTimeout(tick, Math.max(0, (k * interval - nowS()) * 1000));
    else if (inflight === 0) resolve();
  };
  tick();
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

async function main() {
  if (isGrpc) connectGrpc(); else connectHttp();
  const cpu0 = process.cpuUsage();
  await new Promise((resolve) => (cfg.rate ? openLoop(resolve) : closedLoop(resolve)));
  const wall = nowS();
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  const measured = latencies.length;
  const ok = outcomes.ok || 0;
  // By time: the measured window; by count (verification): the whole run.
  const windowS = maxRequests ? wall : (cfg.duration_s || wall);
  const result = {
    requests: measured,
    ok,
    errors: measured - ok,
    outcomes,
    all_outcomes: allOutcomes,
    issued,
    rps: measured / windowS,
    ok_rps: ok / windowS,
    window_s: windowS,
    p50_ms: pct(latencies, 50),
    p90_ms: pct(latencies, 90),
    p99_ms: pct(latencies, 99),
    max_ms: measured ? latencies[measured - 1] : null,
    mean_ms: measured ? latencies.reduce((a, b) => a + b, 0) / measured : null,
    body_lengths: bodyLengths,
    counter_end: counter,
    wall_s: wall,
    cpu_user_s: cpu.user / 1e6,
    cpu_system_s: cpu.system / 1e6,
    max_schedule_lag_ms: cfg.rate ? maxLagMs : null,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  for (const s of sessions) s.close();
  if (agent) agent.destroy();
  setTimeout(() => process.exit(0), 50).unref();
}

process.on('SIGTERM', () => { stopping = true; });
main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(2); });
