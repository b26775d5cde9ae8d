// node load.mjs URL SECONDS CONNECTIONS METHOD HEADERS_JSON [BODY]
// Prints one JSON line: {"requests_per_sec": …, "latency_p50_ms": …, "non2xx": …, "errors": …}
import autocannon from 'autocannon';

const [url, seconds, connections, method, headersJson, body] = process.argv.slice(2);
const result = await autocannon({
  url,
  duration: Number(seconds),
  connections: Number(connections),
  method,
  headers: JSON.parse(headersJson),
  body: body || undefined,
});
console.log(JSON.stringify({
  requests_per_sec: result.requests.average,
  latency_p50_ms: result.latency.p50,
  non2xx: result.non2xx,
  errors: result.errors,
  total: result.requests.total,
}));
