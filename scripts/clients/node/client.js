#!/usr/bin/env node
// Example Node.js client of the zambeze-mesh `Campaigns` service.
//
// Loads the wire contract straight from proto/ with @grpc/proto-loader, connects to
// an agent's mTLS port with a client certificate issued by the mesh
// (`zmesh cert issue-client NAME --out DIR`), submits a two-activity campaign (a shell
// echo and a dependent shell activity that reads its output), follows `Watch` to the
// end printing every event, and exits 0 when the campaign SUCCEEDED.
//
// Usage:
//   node client.js --target HOST:PORT --ca ca.crt --cert client.crt --key client.key
// Options:
//   --name NAME            campaign name (default "node client")
//   --server-name NAME     expected name in the agent certificate (default: the target host)
//   --timeout SECONDS      give up after this long (default 120)
//   --proto-dir DIR        where the .proto files are (default: the repository's proto/)
//   --insecure-no-cert     present no client certificate (the agent must refuse the TLS handshake)
//   --call-membership      call the agent-only Membership.Ping with the client certificate
//                          (the agent must answer PERMISSION_DENIED)
// Exit codes: 0 campaign SUCCEEDED (or the expected answer printed), 1 campaign ended
// otherwise, 2 usage error, 3 RPC error (its status code name is printed).
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// grpc-js sets the TLS server name to the target host; for an IP target (the agent's
// certificate has an IP SAN) Node warns about it on every connection. Drop just that warning.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (w.code !== 'DEP0123') process.stderr.write(`${w.name}: ${w.message}\n`);
});

const FINAL = new Set(['CAMPAIGN_STATE_SUCCEEDED', 'CAMPAIGN_STATE_FAILED', 'CAMPAIGN_STATE_CANCELLED']);
const MAX_RESUMES = 5;

function usage(message) {
  process.stderr.write(`${message}\nusage: node client.js --target HOST:PORT --ca ca.crt ` +
    '--cert client.crt --key client.key [--insecure-no-cert] [--call-membership]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const flags = new Set(['insecure-no-cert', 'call-membership']);
  const opts = {
    name: 'node client',
    timeout: 120,
    'proto-dir': path.resolve(__dirname, '..', '..', '..', 'proto'),
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) usage(`unexpected argument ${arg}`);
    const key = arg.slice(2);
    if (flags.has(key)) {
      opts[key] = true;
    } else if (['target', 'ca', 'cert', 'key', 'name', 'server-name', 'timeout', 'proto-dir'].includes(key)) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      opts[key] = argv[++i];
    } else {
      usage(`unknown option ${arg}`);
    }
  }
  if (!opts.target || !opts.ca) usage('--target and --ca are required');
  if (!opts['insecure-no-cert'] && (!opts.cert || !opts.key)) {
    usage('--cert and --key are required (or --insecure-no-cert)');
  }
  opts.timeout = Number(opts.timeout);
  if (!(opts.timeout > 0)) usage('--timeout must be a positive number of seconds');
  return opts;
}

function loadPackage(protoDir) {
  const def = protoLoader.loadSync(
    ['zambeze_mesh/v1/campaigns.proto', 'zambeze_mesh/v1/membership.proto'],
    {
      includeDirs: [protoDir],
      keepCase: true, // field names as in the .proto (campaign_id, after_seq, ...)
      longs: String, // uint64 seq / int64 times as decimal strings
      enums: String, // enum values by name (CAMPAIGN_STATE_SUCCEEDED, ...)
      defaults: true,
      oneofs: true,
    },
  );
  return grpc.loadPackageDefinition(def).zambeze_mesh.v1;
}

function credentials(opts) {
  const ca = fs.readFileSync(opts.ca);
  if (opts['insecure-no-cert']) return grpc.credentials.createSsl(ca);
  return grpc.credentials.createSsl(ca, fs.readFileSync(opts.key), fs.readFileSync(opts.cert));
}

function deadline(opts) {
  return new Date(Date.now() + opts.timeout * 1000);
}

function statusName(code) {
  return Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
}

let noCert = false;

function fail(err) {
  process.stdout.write(`rpc error: ${statusName(err.code)}: ${err.details || err.message}\n`);
  if (noCert && err.code === grpc.status.UNAVAILABLE) {
    process.stdout.write('refused: TLS handshake failed (the agent requires a client certificate ' +
      'issued by the mesh)\n');
  }
  process.exit(3);
}

function unary(client, method, request, opts) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline(opts) }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

function campaignSpec(opts) {
  return {
    name: opts.name,
    client_request_id: crypto.randomUUID(), // Submit is idempotent on this key
    activities: [
      {
        name: 'greet',
        shell: { cmd: 'echo "hello from node" > "$ZMESH_OUTPUT_DIR/greeting.txt"; echo greeted' },
      },
      {
        name: 'reply',
        shell: { cmd: 'cat "$ZMESH_INPUT_0/greeting.txt"' },
        data_uris: ['@output:greet'], // greet's output dir, staged as input 0 (and a dependency)
        depends_on: ['greet'],
      },
    ],
  };
}

function describe(ev) {
  const what = ev.activity ? `activity=${ev.activity} state=${ev.state} attempt=${ev.attempt}` :
    `campaign state=${ev.campaign_state}`;
  let line = `event seq=${ev.seq} ${what}`;
  if (ev.agent) line += ` agent=${ev.agent}`;
  if (ev.message) line += ` message=${JSON.stringify(ev.message)}`;
  if (ev.detail && ev.detail.stdout_tail) line += ` stdout=${JSON.stringify(ev.detail.stdout_tail)}`;
  return line;
}

// Follow Watch from after_seq until the final campaign-level event. When the stream
// breaks (UNAVAILABLE, or it ends early) subscribe again with after_seq = the last seq
// seen: the agent replays nothing twice and loses nothing.
function follow(client, campaignId, opts) {
  let last = 0;
  let resumes = 0;
  let settled = false;
  return new Promise((resolve, reject) => {
    const settle = (fn, value) => {
      if (!settled) {
        settled = true;
        fn(value);
      }
    };
    const subscribe = () => {
      let retried = false;
      const retry = (err) => {
        if (settled || retried) return;
        retried = true;
        if (resumes >= MAX_RESUMES) {
          settle(reject, err || new Error('the event stream ended before the campaign did'));
          return;
        }
        resumes += 1;
        setTimeout(subscribe, 200 * resumes);
      };
      const call = client.Watch({ campaign_id: campaignId, after_seq: String(last), follow: true },
        { deadline: deadline(opts) });
      call.on('data', (ev) => {
        if (settled) return;
        const seq = Number(ev.seq);
        if (seq <= last) return; // already seen before a resume
        if (seq !== last + 1) {
          call.cancel();
          settle(reject, new Error(`event stream skipped from seq ${last} to ${seq}`));
          return;
        }
        last = seq;
        resumes = 0;
        process.stdout.write(describe(ev) + '\n');
        if (!ev.activity && FINAL.has(ev.campaign_state)) {
          settle(resolve, ev); // the stream ends after this event
          call.cancel();
        }
      });
      call.on('error', (err) => {
        if (err.code === grpc.status.UNAVAILABLE) retry(err);
        else settle(reject, err);
      });
      call.on('end', () => retry(null));
    };
    subscribe();
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  noCert = Boolean(opts['insecure-no-cert']);
  const v1 = loadPackage(opts['proto-dir']);
  const channelOptions = {};
  if (opts['server-name']) channelOptions['grpc.ssl_target_name_override'] = opts['server-name'];
  const creds = credentials(opts);

  if (opts['call-membership']) {
    const membership = new v1.Membership(opts.target, creds, channelOptions);
    try {
      await unary(membership, 'Ping', { seq: '1', from: 'node-client', target: '' }, opts);
      process.stdout.write('Membership.Ping was accepted (it should not be)\n');
      process.exit(1);
    } catch (err) {
      fail(err);
    }
  }

  const campaigns = new v1.Campaigns(opts.target, creds, channelOptions);
  let submitted;
  try {
    submitted = await unary(campaigns, 'Submit', campaignSpec(opts), opts);
  } catch (err) {
    fail(err);
  }
  process.stdout.write(`submitted campaign ${submitted.campaign_id} (monitor ${submitted.monitor})\n`);
  let final;
  try {
    final = await follow(campaigns, submitted.campaign_id, opts);
  } catch (err) {
    if (err.code !== undefined) fail(err);
    process.stdout.write(`error: ${err.message}\n`);
    process.exit(3);
  }
  const state = final.campaign_state.replace('CAMPAIGN_STATE_', '');
  process.stdout.write(`campaign ${submitted.campaign_id} ${state}\n`);
  campaigns.close();
  process.exit(state === 'SUCCEEDED' ? 0 : 1);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(3);
});
