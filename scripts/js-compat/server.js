// js-server: the official SDK's DaprServer, unchanged. Receives `hello` invocations (answers with what it got and
// the verified caller) and `js-events` pub/sub events (publishes one to itself at start and records each event in
// the shared state store, where the checkers look for it).
const { DaprServer, DaprClient, HttpMethod, CommunicationProtocolEnum } = require("@dapr/dapr");

async function main() {
  const server = new DaprServer({
    serverHost: "127.0.0.1",
    serverPort: process.env.APP_PORT || "16021",
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    clientOptions: { daprHost: "127.0.0.1", daprPort: process.env.DAPR_HTTP_PORT },
  });
  await server.invoker.listen(
    "hello",
    async (data) => ({ echo: data.body, caller: data.headers["dapr-caller-app-id"] || null }),
    { method: HttpMethod.POST },
  );
  await server.pubsub.subscribe("pubsub", "js-events", async (event, headers) => {
    const client = new DaprClient({ daprHost: "127.0.0.1", daprPort: process.env.DAPR_HTTP_PORT });
    await client.state.save("statestore", [
      { key: "js-event-seen", value: { event, publisher: headers ? headers["ward-publisher"] || null : null } },
    ]);
    console.log(`event received: ${JSON.stringify(event)}`);
  });
  await server.start();
  const client = new DaprClient({ daprHost: "127.0.0.1", daprPort: process.env.DAPR_HTTP_PORT });
  // Publish until the event arrives (the subscription starts once the app listens).
  for (let i = 0; i < 50; i++) {
    await client.pubsub.publish("pubsub", "js-events", { hello: "from js-server" });
    await new Promise((r) => setTimeout(r, 200));
    const seen = await client.state.get("statestore", "js-event-seen");
    if (seen) break;
  }
  console.log("js-server ready");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
