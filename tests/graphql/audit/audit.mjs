// Runs graphql-http's auditServer against the URL in argv[2] and prints one JSON line per
// audit: {id, name, status, reason}. Exit code 0 always; the Python test judges the results.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const results = await auditServer({ url });
for (const r of results) {
  console.log(JSON.stringify({ id: r.id, name: r.name, status: r.status, reason: r.reason ?? null }));
}
