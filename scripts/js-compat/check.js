// Drives ward through the official Dapr JavaScript SDK's DaprClient, unchanged, over HTTP or gRPC (JS_PROTOCOL),
// with or without DAPR_API_TOKEN. Prints one line per check and a final `[mode] N passed, N failed`.
const { DaprClient, HttpMethod, CommunicationProtocolEnum } = require("@dapr/dapr");

const protocol = process.env.JS_PROTOCOL === "grpc" ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP;
// `ward run` gives every app a DAPR_API_TOKEN (the run file's, or a generated one): both modes send one.
const mode = process.env.JS_PROTOCOL;
const port = protocol === CommunicationProtocolEnum.GRPC ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT;
const client = new DaprClient({ daprHost: "127.0.0.1", daprPort: port, communicationProtocol: protocol });
const results = { passed: 0, failed: 0 };
const key = `js-${process.env.JS_PROTOCOL}`;

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function refused(fn, what) {
  try {
    await fn();
  } catch (err) {
    return String(err && (err.message || err));
  }
  throw new Error(`${what} succeeded`);
}

async function check(name, fn) {
  try {
    await fn();
    results.passed += 1;
    console.log(`PASS [${mode}] ${name}`);
  } catch (err) {
    results.failed += 1;
    console.log(`FAIL [${mode}] ${name}: ${err && err.stack ? err.stack.split("\n").slice(0, 2).join(" ") : err}`);
  }
}

async function eventually(fn, what, seconds = 15) {
  const until = Date.now() + seconds * 1000;
  for (;;) {
    const value = await fn().catch(() => undefined);
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  await client.start();
  await check("state save/get/delete", async () => {
    await client.state.save("statestore", [{ key, value: { n: 1 } }]);
    const got = await client.state.get("statestore", key);
    assert(got && got.n === 1, `got ${JSON.stringify(got)}`);
    await client.state.delete("statestore", key);
    const gone = await client.state.get("statestore", key);
    assert(gone === "" || gone === undefined || gone === null, `still there: ${JSON.stringify(gone)}`);
  });
  await check("state bulk and transaction", async () => {
    await client.state.transaction("statestore", [
      { operation: "upsert", request: { key: `${key}-a`, value: "A" } },
      { operation: "upsert", request: { key: `${key}-b`, value: "B" } },
    ]);
    const bulk = await client.state.getBulk("statestore", [`${key}-a`, `${key}-b`]);
    const values = bulk.map((item) => item.data).sort();
    assert(JSON.stringify(values) === JSON.stringify(["A", "B"]), `bulk ${JSON.stringify(bulk)}`);
  });
  await check("out-of-scope store looks missing", async () => {
    const hidden = await refused(() => client.state.get("hidden", "k"), "reading an out-of-scope store");
    const missing = await refused(() => client.state.get("no-such-store", "k"), "reading a missing store");
    assert(hidden.replace(/hidden/g, "X") === missing.replace(/no-such-store/g, "X"), `${hidden} vs ${missing}`);
  });
  await check("invoke DaprServer (JS) through both sidecars", async () => {
    const answer = await eventually(
      () => client.invoker.invoke("js-server", "hello", HttpMethod.POST, { ping: mode }),
      "js-server",
    );
    const echo = typeof answer.echo === "string" ? JSON.parse(answer.echo) : answer.echo;
    assert(echo && echo.ping === mode, `answer ${JSON.stringify(answer)}`);
    assert(answer.caller === process.env.APP_ID, `caller ${JSON.stringify(answer.caller)}`);
  });
  await check("secrets", async () => {
    const secret = await client.secret.get("secretstore", "db-password");
    assert(secret["db-password"] === "s3cr3t", JSON.stringify(secret));
  });
  await check("metadata get and set", async () => {
    await client.metadata.set("js-compat", mode);
    const meta = await client.metadata.get();
    assert(meta.id === process.env.APP_ID, `id ${meta.id}`);
    const extended = meta.extended || meta.extendedMetadata || {};
    assert(extended["js-compat"] === mode, `extended ${JSON.stringify(extended)}`);
    const names = (meta.components || meta.registeredComponents || []).map((c) => c.name);
    assert(names.includes("statestore") && !names.includes("hidden"), `components ${names}`);
  });
  await check("publish (scoped) and a DaprServer subscription delivered", async () => {
    await client.pubsub.publish("pubsub", "checks", { from: mode });
    const forbidden = await client.pubsub.publish("pubsub", "js-events", { from: mode }).then(
      (r) => (r && r.error ? String(r.error) : ""),
      (err) => String(err),
    );
    assert(forbidden !== "", "publishing outside publishingScopes was accepted");
    const seen = await eventually(() => client.state.get("statestore", "js-event-seen"), "js-server's event");
    assert(seen.event && seen.event.hello === "from js-server", JSON.stringify(seen));
    assert(seen.publisher === "spiffe://public/ns/default/js-server", `publisher ${JSON.stringify(seen.publisher)}`);
  });
  {
    await check("wrong API token is refused", async () => {
      const bad = new DaprClient({ daprHost: "127.0.0.1", daprPort: port, communicationProtocol: protocol, daprApiToken: "wrong" });
      await refused(() => bad.state.get("statestore", key), "a call with a wrong token");
    });
  }
  console.log(`[${mode}] ${results.passed} passed, ${results.failed} failed`);
  process.exit(results.failed ? 1 : 0);
}

main().catch((err) => {
  console.log(`FAIL [${mode}] setup: ${err}`);
  console.log(`[${mode}] ${results.passed} passed, ${results.failed + 1} failed`);
  process.exit(1);
});
