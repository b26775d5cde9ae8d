// node deliveries.mjs URL FILE CONNECTIONS
// POSTs each request of FILE (a JSON list of {body, headers}) once, in order, over
// CONNECTIONS keep-alive connections. Prints one JSON line:
// {"seconds": …, "requests": …, "non2xx": …, "errors": …, "latency_p50_ms": …}
import autocannon from 'autocannon';
import { readFileSync } from 'node:fs';

const [url, file, connections] = process.argv.slice(2);
const list = JSON.parse(readFileSync(file, 'utf8'));
let next = 0;
const started = process.hrtime.bigint();
const result = await autocannon({
  url,
  connections: Number(connections),
  amount: list.length,
  method: 'POST',
  requests: [{
    setupRequest: (request) => {
      const item = list[next++ % list.length];
      request.body = item.body;
      request.headers = { ...item.headers, 'content-type': 'application/json' };
      return request;
    },
  }],
});
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({
  seconds,
  requests: result.requests.total,
  non2xx: result.non2xx,
  errors: result.errors,
  latency_p50_ms: result.latency.p50,
}));
