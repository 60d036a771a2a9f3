// The OpenAI-compatible API of `skingpt serve`, driven by the official
// `openai` npm client exactly as an application would use it: only baseURL
// and apiKey point at the local server. Run by tests/js/run.sh.
import OpenAI from 'openai';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const base = process.env.SKINGPT_URL;
const key = process.env.SKINGPT_KEY;
const example = process.env.SKINGPT_EXAMPLE;
assert.ok(base && key && example, 'SKINGPT_URL, SKINGPT_KEY and SKINGPT_EXAMPLE must be set');

const client = new OpenAI({ baseURL: base + '/v1', apiKey: key, maxRetries: 0, timeout: 120_000 });
const image = 'data:image/jpeg;base64,' + readFileSync(example).toString('base64');
let passed = 0;
async function check(name, fn) {
  await fn();
  passed++;
  console.log('ok -', name);
}

await check('models.list', async () => {
  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].object, 'model');
});
const model = (await client.models.list()).data[0].id;

await check('text question, not streamed', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'What is a melanoma?' }], max_tokens: 8, temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

// One question about the example photo, as OpenAI clients send it.
const imageQuestion = [{
  role: 'user',
  content: [
    { type: 'text', text: 'Could you describe the skin disease in this image for me?' },
    { type: 'image_url', image_url: { url: image } },
  ],
}];

let plain;
await check('image question, not streamed', async () => {
  const r = await client.chat.completions.create({
    model,
    messages: imageQuestion,
    max_tokens: 8,
    temperature: 0,
  });
  plain = r.choices[0].message.content;
  assert.equal(typeof plain, 'string');
  assert.ok(r.usage.prompt_tokens > 4, 'the image queries are part of the prompt');
});

await check('image question, streamed', async () => {
  const stream = await client.chat.completions.create({
    model,
    messages: imageQuestion,
    max_tokens: 8,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let chunks = 0;
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta && c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks >= 2, 'several chunks');
  assert.ok(finish, 'a finish_reason');
  assert.ok(usage && usage.completion_tokens >= 0 && usage.prompt_tokens > 4, 'usage in the last chunk');
  assert.ok(text.includes(plain), `streamed "${text}" holds the greedy answer "${plain}"`);
});

await check('a remote image URL is refused with 400', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'x' }, { type: 'image_url', image_url: { url: 'https://example.org/a.jpg' } }] }],
    }),
    (e) => e instanceof OpenAI.BadRequestError && /never connects out/.test(e.message),
  );
});

await check('a wrong key gets 401', async () => {
  const bad = new OpenAI({ baseURL: base + '/v1', apiKey: 'not-the-key-0000000000', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
});

console.log(`all ${passed} checks passed`);
