// The official TypeScript MCP SDK client against a running `bridge serve` (driven by tests/test_mcp_ts.py).
//
// Environment: BRIDGE_URL (the server's base URL), BRIDGE_TOKEN (a coordinator token), BRIDGE_PARTICIPANT_TOKEN
// (a participant token). Every step's outcome, or the exception the SDK threw, goes into one JSON document on
// stdout; the exit status is 0 whenever that document was written: the Python test judges the outcomes.
import { readFileSync } from "node:fs";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const sdkVersion = JSON.parse(
  readFileSync(new URL("./node_modules/@modelcontextprotocol/sdk/package.json", import.meta.url), "utf8"),
).version;

function need(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`${name} is not set\n`);
    process.exit(2);
  }
  return value;
}

const url = new URL("/mcp", need("BRIDGE_URL"));
const coordinatorToken = need("BRIDGE_TOKEN");
const participantToken = need("BRIDGE_PARTICIPANT_TOKEN");
const report = { sdk_version: sdkVersion, node_version: process.version, url: url.href, steps: {} };

function thrown(error) {
  return {
    ok: false,
    threw: true,
    error: `${error?.name ?? "Error"}: ${error?.message ?? String(error)}`,
    code: error?.code ?? null,
  };
}

function toolOutcome(result) {
  const text = (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
  return {
    ok: true,
    threw: false,
    isError: result.isError ?? false,
    text,
    hasStructuredContent: result.structuredContent !== undefined,
    structuredContent: result.structuredContent ?? null,
  };
}

async function step(name, action) {
  try {
    report.steps[name] = await action();
  } catch (error) {
    report.steps[name] = thrown(error);
  }
  return report.steps[name];
}

async function connect(token, name) {
  const client = new Client({ name, version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport); // initialize + notifications/initialized
  return client;
}

const call = (client, name, args) => async () => toolOutcome(await client.callTool({ name, arguments: args }));
const clients = [];

try {
  let coordinator = null;
  await step("connect", async () => {
    coordinator = await connect(coordinatorToken, "bridge-ts-coordinator");
    clients.push(coordinator);
    return { ok: true, threw: false, serverVersion: coordinator.getServerVersion() ?? null,
             protocolVersion: coordinator.transport?.protocolVersion ?? null };
  });
  if (coordinator) {
    await step("list_tools", async () => {
      const { tools } = await coordinator.listTools(); // also caches each tool's output-schema validator
      return { ok: true, threw: false, tools: tools.map((t) => t.name) };
    });
    const created = await step("create_thread", call(coordinator, "create_thread",
      { title: "ts", type: "workflow", participants: ["a", "b"] }));
    const threadId = created.structuredContent?.thread_id ?? null;
    report.thread_id = threadId;
    await step("post_message", call(coordinator, "post_message",
      { thread_id: threadId, schema_version: 1, kind: "chat", body: "hi" }));
    await step("read_messages", call(coordinator, "read_messages", { thread_id: threadId, since_seq: 0 }));
    await step("bad_argument", call(coordinator, "post_message", { thread_id: threadId, kind: "chat", body: "hi" }));
  }

  let participant = null;
  await step("participant_connect", async () => {
    participant = await connect(participantToken, "bridge-ts-participant");
    clients.push(participant);
    const { tools } = await participant.listTools(); // a real client lists before calling: validators are cached
    return { ok: true, threw: false, tools: tools.map((t) => t.name) };
  });
  if (participant) {
    await step("forbidden", call(participant, "create_thread",
      { title: "ts", type: "workflow", participants: ["a", "b"] }));
  }
} finally {
  for (const client of clients) {
    try {
      await client.close();
    } catch (error) {
      report.close_error = thrown(error).error;
    }
  }
}

process.stdout.write(`${JSON.stringify(report)}\n`);
