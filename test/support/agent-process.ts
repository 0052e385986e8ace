// An agent in a process of its own, for the tests that kill it with SIGKILL mid-operation
// (test/manager/encryption-crash.test.ts). Usage: node agent-process.js DATA_DIR PORT.
// The agent's identity must already be in DATA_DIR (joinManager). HYPERSEAL_CRASH_POINT,
// when set, makes it kill itself at that point (src/crashpoint.ts). Prints "ready" once
// it serves. Nothing here ships.
import { openQemuDriver } from '../../src/agent/qemu-driver.js';
import { startAgent } from '../../src/agent/server.js';

const [dataDir, port] = process.argv.slice(2);
if (dataDir === undefined || port === undefined) throw new Error('usage: agent-process DATA_DIR PORT');
const driver = await openQemuDriver(dataDir);
const server = await startAgent({ dataDir, listen: { host: '127.0.0.1', port: Number(port) }, driver });
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void server.close().then(() => process.exit(0));
});
