/** The package's entry: the typed SDK for Node.js (`import { ApiClient } from 'hyperseal'`). */
export * from './sdk/api.gen.js';
export { Hyperseal, taskError } from './sdk/hyperseal.js';
export type { TaskProgress, WaitOptions } from './sdk/hyperseal.js';
export { ApiClient, NodeTransport, findCredentials, loadCredentials } from './sdk/client.js';
export type { Credentials } from './sdk/client.js';
export type { Transport } from './sdk/transport.js';
export { ErrorCodes, HypersealError } from './errors.js';
export type { ErrorCode } from './errors.js';
