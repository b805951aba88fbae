// The official Leap Edge JavaScript client (@onehop/leap-edge-js, its CommonJS build:
// see tests/js/interop.cjs for why) as a throughput contender:
//
//   node bench.cjs <socketUrl> <messages> [timeoutMs]
//
// Connects (the blaster's /ws?mode=blast stream), counts MESSAGE serviceEvents and
// prints one JSON line: {"count": N, "seconds": S, "last": n} where S runs from the
// first MESSAGE to the last (process.hrtime). Exit 0 when all arrived, 2 on timeout.
"use strict";
const { LeapEdgeClient } = require("@onehop/leap-edge-js");

const [socketUrl, messagesArg, timeoutMs = "60000"] = process.argv.slice(2);
const total = Number(messagesArg);
const leap = new LeapEdgeClient({ projectId: "project_x", token: "leap_token_x" }, { socketUrl });
let count = 0;
let first = 0n;

leap.on("serviceEvent", (event) => {
  if (event.eventType !== "MESSAGE") return;
  count += 1;
  if (count === 1) first = process.hrtime.bigint();
  if (count === total) {
    const seconds = Number(process.hrtime.bigint() - first) / 1e9;
    process.stdout.write(JSON.stringify({ count, seconds, last: event.data.d.n }) + "\n");
    process.exit(0);
  }
});

setTimeout(() => {
  process.stdout.write(JSON.stringify({ count, seconds: null, last: null }) + "\n");
  process.exit(2);
}, Number(timeoutMs));

leap.connect();
