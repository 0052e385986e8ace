/**
 * Secrets for the CLI (passphrases): from an environment variable, a file, or an
 * interactive prompt on the terminal without echo — never from the command line, where
 * other users see it in the process list and shells keep it in their history.
 */
import { readFileSync } from 'node:fs';
import { HypersealError } from '../errors.js';

export interface SecretSource {
  /** Environment variable checked first. */
  env: string;
  /** A file whose content (trailing newline removed) is the secret. */
  file?: string;
  /** What to ask for on a terminal. */
  prompt: string;
  /** Ask twice on a terminal (a new passphrase). */
  confirm?: boolean;
}

export async function readSecret(s: SecretSource): Promise<string> {
  const fromEnv = process.env[s.env];
  if (s.file !== undefined) return readFileSync(s.file, 'utf8').replace(/\r?\n$/, '');
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (!process.stdin.isTTY) {
    throw new HypersealError(
      'HS_ERR_INVALID_ARGUMENT',
      `no ${s.prompt}: set ${s.env}, give a file, or run on a terminal to be asked`,
    );
  }
  const first = await promptHidden(`${s.prompt}: `);
  if (s.confirm === true && (await promptHidden(`${s.prompt} again: `)) !== first) {
    throw new HypersealError('HS_ERR_INVALID_ARGUMENT', `the two ${s.prompt} entries differ`);
  }
  return first;
}

function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    let value = '';
    const done = (err?: Error): void => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new HypersealError('HS_ERR_INVALID_ARGUMENT', 'cancelled'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}
