// Drives the official Leap Edge JavaScript client (@onehop/leap-edge-js) against a
// Leap Edge endpoint and reports what it sees as JSON lines on stdout:
//
//   node interop.cjs <socketUrl> <projectId> <token or ""> <channel> [timeoutMs]
//
//   {"type":"state","state":"connecting"|"authenticating"|"connected"|"errored"}
//   {"type":"event","channelId":...,"eventType":...,"data":...}   (every serviceEvent)
//   {"type":"subscribed","channel":...}   (SUBSCRIBE was sent, once connected)
//   {"type":"done"}                       (a MESSAGE arrived: exit 0)
//   {"type":"timeout"}                    (exit 2)
//
// An empty token means a tokenless client (the JS client then omits the key).
//
// CommonJS on purpose: the package's ESM build (dist/node/index.js) does
// `import {EventEmitter} from "eventemitter3"`, which Node refuses because
// eventemitter3 4.x is CommonJS; its CommonJS build (dist/node/index.cjs, the same
// client) loads fine.
"use strict";
const { LeapEdgeClient } = require("@onehop/leap-edge-js");

const [socketUrl, projectId, token, channel, timeoutMs = "20000"] = process.argv.slice(2);
if (!socketUrl || !projectId || channel === undefined) {
  console.error("usage: node interop.cjs <socketUrl> <projectId> <token or ''> <channel> [timeoutMs]");
  process.exit(64);
}

const report = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const auth = token ? { projectId, token } : { projectId };
const leap = new LeapEdgeClient(auth, { socketUrl });

leap.on("connectionStateUpdate", (state) => {
  report({ type: "state", state });
  if (state === "connected") {
    leap.sendServicePayload({ e: "SUBSCRIBE", c: channel, d: null });
    report({ type: "subscribed", channel });
  }
});

leap.on("serviceEvent", (event) => {
  report({ type: "event", channelId: event.channelId, eventType: event.eventType, data: event.data });
  if (event.eventType === "MESSAGE") {
    report({ type: "done" });
    process.exit(0);
  }
});

setTimeout(() => {
  report({ type: "timeout" });
  process.exit(2);
}, Number(timeoutMs));

leap.connect();
