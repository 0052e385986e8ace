/**
 * Test helpers for real UEFI Secure Boot checks (qemu-experiments.md §1.3–1.7): build a
 * tiny EFI application with gnu-efi, sign it with sbsign, put it on a FAT image as the
 * removable-media boot path, and boot it under OVMF, classifying the outcome as
 *
 *   ran      the application printed its marker (and the SecureBoot value it saw)
 *   refused  the firmware said `BdsDxe: failed to load … Access Denied|Security Violation`
 *   timeout  neither within the time limit (firmware output is not an API: the final fallback)
 *
 * Every external tool is checked up front by efiToolchain(), so tests can skip with a
 * message naming the missing Debian packages instead of failing obscurely.
 */
import { execFile, spawn } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const MARKER = 'HYPERSEAL-EFI-MARKER';

const GNU_EFI_FILES = [
  '/usr/include/efi/efi.h',
  '/usr/lib/crt0-efi-x86_64.o',
  '/usr/lib/elf_x86_64_efi.lds',
  '/usr/lib/libefi.a',
  '/usr/lib/libgnuefi.a',
] as const;

export const OVMF = {
  secbootCode: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd',
  msCode: '/usr/share/OVMF/OVMF_CODE_4M.ms.fd',
  blankVars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  msVars: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd',
} as const;

/** Tool → Debian package, for the skip message. */
const TOOLS: readonly [string, string][] = [
  ['gcc', 'gcc'],
  ['ld', 'binutils'],
  ['objcopy', 'binutils'],
  ['sbsign', 'sbsigntool'],
  ['mkfs.vfat', 'dosfstools'],
  ['mmd', 'mtools'],
  ['mcopy', 'mtools'],
  ['qemu-system-x86_64', 'qemu-system-x86'],
];

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, fsc.R_OK);
    return true;
  } catch {
    return false;
  }
}

async function onPath(tool: string): Promise<boolean> {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']);
  for (const dir of dirs) if (dir !== '' && (await exists(join(dir, tool)))) return true;
  return false;
}

/** Undefined when everything is installed, else a sentence naming the missing packages. */
export async function efiToolchainMissing(): Promise<string | undefined> {
  const missing = new Set<string>();
  for (const f of GNU_EFI_FILES) if (!(await exists(f))) missing.add('gnu-efi');
  for (const [tool, pkg] of TOOLS) if (!(await onPath(tool))) missing.add(pkg);
  for (const f of Object.values(OVMF)) if (!(await exists(f))) missing.add('ovmf');
  if (missing.size === 0) return undefined;
  return `missing Debian packages: ${[...missing].join(' ')} (scripts/ensure-deps.sh installs them)`;
}

/** Runs a tool, rejecting with its stderr on failure. */
export function run(
  file: string,
  args: readonly string[],
  timeoutMs = 60_000,
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: timeoutMs, maxBuffer: 8 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err !== null) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        else resolve({ stdout, stderr });
      },
    );
  });
}

/**
 * The payload: prints the marker and the SecureBoot variable it reads (-1 when absent),
 * then powers the machine off, so QEMU exits by itself when the image ran.
 */
const MARKER_C = `#include <efi.h>
#include <efilib.h>

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
  EFI_GUID global = EFI_GLOBAL_VARIABLE;
  UINT8 value = 0;
  UINTN size = sizeof(value);
  EFI_STATUS status;
  INT32 shown;

  InitializeLib(image, systab);
  status = uefi_call_wrapper(RT->GetVariable, 5, L"SecureBoot", &global, NULL, &size, &value);
  shown = EFI_ERROR(status) ? -1 : (INT32)value;
  Print(L"\\r\\n${MARKER} SecureBoot=%d\\r\\n", shown);
  uefi_call_wrapper(RT->ResetSystem, 4, EfiResetShutdown, EFI_SUCCESS, 0, NULL);
  return EFI_SUCCESS;
}
`;

/** Builds the marker application into `dir`; returns the .efi path (about 48 KiB). */
export async function buildMarkerApp(dir: string): Promise<string> {
  const src = join(dir, 'marker.c');
  const obj = join(dir, 'marker.o');
  const so = join(dir, 'marker.so');
  const efi = join(dir, 'marker.efi');
  await writeFile(src, MARKER_C);
  // The usual gnu-efi recipe: PIC ELF with the EFI calling convention wrapper, linked
  // against gnu-efi's crt0 and libs, then converted to a PE32+ EFI application (subsystem 10).
  await run('gcc', [
    '-I/usr/include/efi',
    '-I/usr/include/efi/x86_64',
    '-fpic',
    '-ffreestanding',
    '-fno-stack-protector',
    '-fno-stack-check',
    '-fshort-wchar',
    '-mno-red-zone',
    '-maccumulate-outgoing-args',
    '-DEFI_FUNCTION_WRAPPER',
    '-c',
    src,
    '-o',
    obj,
  ]);
  await run('ld', [
    '-shared',
    '-Bsymbolic',
    '-L/usr/lib',
    '-T/usr/lib/elf_x86_64_efi.lds',
    '/usr/lib/crt0-efi-x86_64.o',
    obj,
    '-o',
    so,
    '-lefi',
    '-lgnuefi',
  ]);
  const sections = [
    '.text',
    '.sdata',
    '.data',
    '.dynamic',
    '.dynsym',
    '.rel',
    '.rela',
    '.rel.*',
    '.rela.*',
    '.reloc',
  ];
  await run('objcopy', [
    ...sections.flatMap((s) => ['-j', s]),
    '--target',
    'efi-app-x86_64',
    '--subsystem=10',
    so,
    efi,
  ]);
  // objcopy leaves the file at an odd length (0xbe77). sbsign and efitools hash an image as
  // if padded to 8 bytes, where the certificate table starts; edk2 hashes an unsigned image
  // exactly as it is. Padding here makes the three agree, so a db/dbx hash entry computed
  // with hash-to-efi-sig-list matches what the firmware computes.
  const bytes = await readFile(efi);
  const padded = Math.ceil(bytes.length / 8) * 8;
  if (padded !== bytes.length)
    await writeFile(efi, Buffer.concat([bytes, Buffer.alloc(padded - bytes.length)]));
  return efi;
}

/** Authenticode-signs an EFI image with sbsign (which warns harmlessly about gnu-efi's section gaps). */
export async function signEfi(
  input: string,
  signer: { certPem: string; keyPem: string },
  output: string,
  workDir: string,
): Promise<string> {
  const tag = output.replace(/[^A-Za-z0-9]/g, '_').slice(-40);
  const keyPath = join(workDir, `${tag}.key`);
  const certPath = join(workDir, `${tag}.crt`);
  await writeFile(keyPath, signer.keyPem, { mode: 0o600 });
  await writeFile(certPath, signer.certPem);
  await run('sbsign', ['--key', keyPath, '--cert', certPath, '--output', output, input]);
  return output;
}

/** A whole-disk FAT image (no partition table: OVMF reads it as is) with the app as EFI/BOOT/BOOTX64.EFI. */
export async function makeEspImage(path: string, efiApp: string): Promise<string> {
  await run('mkfs.vfat', ['-C', '-n', 'ESP', path, '4096']);
  await run('mmd', ['-i', path, '::/EFI', '::/EFI/BOOT']);
  await run('mcopy', ['-i', path, efiApp, '::/EFI/BOOT/BOOTX64.EFI']);
  return path;
}

export type BootVerdict = 'ran' | 'refused' | 'timeout';

export interface BootResult {
  verdict: BootVerdict;
  /** The SecureBoot value the app printed (1, 0, or -1 when the variable was absent). */
  secureBoot: number | undefined;
  /** The firmware's refusal line, when refused. */
  refusal: string | undefined;
  /** Serial console output, ANSI escapes removed. */
  serial: string;
  elapsedMs: number;
}

export interface BootOptions {
  code: string;
  /** A writable copy of a variable store: the firmware writes to it at boot. */
  vars: string;
  disk: string;
  timeoutMs?: number;
  memoryMiB?: number;
}

const REFUSAL = /BdsDxe: failed to load (Boot\w+) "[^"]*" from (\S+): (Access Denied|Security Violation)/;
const RAN = new RegExp(`${MARKER} SecureBoot=(-?\\d+)`);
// eslint-disable-next-line no-control-regex -- ANSI CSI sequences are what is stripped
const ANSI = /\u001b\[[0-9;?=]*[A-Za-z]/g;

/**
 * Boots OVMF with Secure Boot wiring (q35, SMM, secure pflash: without SMM the secboot build
 * hangs silently) and classifies the outcome. The QEMU process is this function's own and
 * is always ended before it returns.
 */
export function bootEfi(opts: BootOptions): Promise<BootResult> {
  const started = Date.now();
  const blockdev = (o: Record<string, unknown>): string[] => ['-blockdev', JSON.stringify(o)];
  const args = [
    '-machine',
    'q35,smm=on,pflash0=hs-fw-code,pflash1=hs-fw-vars',
    '-accel',
    'tcg',
    '-m',
    String(opts.memoryMiB ?? 128),
    '-display',
    'none',
    '-no-user-config',
    '-nodefaults',
    '-global',
    'driver=cfi.pflash01,property=secure,value=on',
    ...blockdev({ driver: 'file', 'node-name': 'hs-fw-code-file', filename: opts.code, 'read-only': true }),
    ...blockdev({ driver: 'raw', 'node-name': 'hs-fw-code', file: 'hs-fw-code-file', 'read-only': true }),
    ...blockdev({ driver: 'file', 'node-name': 'hs-fw-vars-file', filename: opts.vars }),
    ...blockdev({ driver: 'raw', 'node-name': 'hs-fw-vars', file: 'hs-fw-vars-file' }),
    ...blockdev({ driver: 'file', 'node-name': 'hs-esp-file', filename: opts.disk, 'read-only': true }),
    ...blockdev({ driver: 'raw', 'node-name': 'hs-esp', file: 'hs-esp-file', 'read-only': true }),
    '-device',
    'virtio-blk-pci,drive=hs-esp,bootindex=1',
    '-chardev',
    'stdio,id=hs-serial,signal=off',
    '-serial',
    'chardev:hs-serial',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let serial = '';
    let stderr = '';
    let settled = false;
    let verdict: Omit<BootResult, 'serial' | 'elapsedMs'> | undefined;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(grace);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      resolve({
        ...(verdict ?? { verdict: 'timeout', secureBoot: undefined, refusal: undefined }),
        serial: serial.replace(ANSI, ''),
        elapsedMs: Date.now() - started,
      });
    };
    let grace: NodeJS.Timeout | undefined;
    const timer = setTimeout(finish, opts.timeoutMs ?? 90_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      serial += chunk;
      if (verdict !== undefined) return;
      const text = serial.replace(ANSI, '');
      const ran = RAN.exec(text);
      const refused = REFUSAL.exec(text);
      if (ran !== null) {
        verdict = { verdict: 'ran', secureBoot: Number(ran[1]), refusal: undefined };
        // The app powers off; give QEMU a moment to exit on its own, then end it.
        grace = setTimeout(finish, 5_000);
      } else if (refused !== null) {
        verdict = { verdict: 'refused', secureBoot: undefined, refusal: refused[0] };
        finish();
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(err);
    });
    child.on('exit', (code) => {
      if (verdict === undefined && !settled) {
        settled = true;
        clearTimeout(timer);
        reject(
          new Error(`QEMU exited (${code}) before a verdict: ${stderr.trim()}\n${serial.replace(ANSI, '')}`),
        );
        return;
      }
      finish();
    });
  });
}
