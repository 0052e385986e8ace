/** `npm run sdk`: rewrites src/sdk/api.gen.ts from the manager's route table. */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { managerOpenApi } from '../manager/services.js';
import type { OpenApiDocument } from './generate.js';
import { renderSdk } from './generate.js';

/** The committed file's path, from dist/src/sdk/ back to src/sdk/. */
export const GENERATED_SDK_PATH = fileURLToPath(new URL('../../../src/sdk/api.gen.ts', import.meta.url));

export function currentSdkSource(): string {
  return renderSdk(managerOpenApi() as unknown as OpenApiDocument);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(GENERATED_SDK_PATH, currentSdkSource());
  console.log(`wrote ${GENERATED_SDK_PATH}`);
}
