// docs/events.md is generated from the registry; this keeps the two in step.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { renderEventsDoc } from './doc.js';
import { EventTypes } from './model.js';

const DOC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'docs', 'events.md');

test('docs/events.md is what the registry renders (run `npm run docs:events` after changing event types)', () => {
  assert.equal(readFileSync(DOC, 'utf8'), renderEventsDoc());
});

test('every event type has an example sentence in docs/events.md', () => {
  const doc = renderEventsDoc();
  for (const t of Object.keys(EventTypes)) assert.ok(doc.includes(`### \`${t}\``), t);
});
