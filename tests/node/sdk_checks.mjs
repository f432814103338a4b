// Drives the official openai npm client against a gateway: node sdk_checks.mjs <baseURL> <apiKey> <model>.
// Prints one JSON object of observations; tests/gateway/test_node_sdk.py asserts on them.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const out = {};

const created = await client.responses.create({ model, input: "Hello from Node", instructions: "Be brief" });
out.create = { id: created.id, status: created.status, text: created.output_text, usage: created.usage };

const raw = await client.responses.create({ model, input: "Stream it", stream: true });
const types = [];
for await (const event of raw) types.push(event.type);
out.rawStream = types;

const helper = client.responses.stream({ model, input: "Stream with the helper", previous_response_id: created.id });
const deltas = [];
helper.on("response.output_text.delta", (event) => deltas.push(event.delta));
const final = await helper.finalResponse();
out.helperStream = { id: final.id, status: final.status, text: final.output_text, deltas: deltas.join("") };

const tools = [{ type: "function", name: "weather", strict: true, parameters: {
  type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false } }];
const asking = client.responses.stream({ model, input: "Weather in Paris?", tools });
const asked = await asking.finalResponse();
out.toolCall = { type: asked.output[0].type, name: asked.output[0].name, arguments: asked.output[0].arguments };

const retrieved = await client.responses.retrieve(final.id);
out.retrieve = { id: retrieved.id, text: retrieved.output_text };
await client.responses.delete(created.id);
try {
  await client.responses.retrieve(created.id);
  out.afterDelete = "found";
} catch (error) {
  out.afterDelete = error.status;
}

const completion = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 4 });
out.completion = { object: completion.object, text: completion.choices[0].text };
const chunks = [];
for await (const chunk of await client.completions.create({ model, prompt: "Once", max_tokens: 3, stream: true })) {
  if (chunk.choices.length) chunks.push(chunk.choices[0].text);
}
out.completionStream = chunks.join("");

console.log(JSON.stringify(out));
