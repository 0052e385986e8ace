/**
 * One VM: its state and badges, power actions, Secure Boot / vTPM / migration mode,
 * encryption, the migrate dialog, the serial console, and the progress of the last action.
 */
import { taskError } from '../sdk/hyperseal.js';
import type { EncryptionPolicy, Host, Task, Vm, VmPatch } from '../sdk/api.gen.js';
import type { PageContext } from './app.js';
import type { UiElement } from './dom.js';
import { field, guarded, h, select } from './dom.js';
import { errorText, taskView, time, vmBadges } from './format.js';

/** The last action started on each VM from this page, shown again after the page re-renders. */
const lastTask = new Map<string, { task: Task; label: string }>();

type PowerOp = 'powerOnVm' | 'shutdownVm' | 'powerOffVm' | 'resetVm';

export async function vmPage(ctx: PageContext, id: string): Promise<void> {
  const [vm, hosts, policies] = await Promise.all([
    ctx.api.getVm(id),
    ctx.access.can('listHosts') ? ctx.api.listHosts() : Promise.resolve([]),
    ctx.api.listEncryptionPolicies(),
  ]);
  const taskPanel = h('div', { id: 'task', class: 'task-panel' });
  const last = lastTask.get(vm.id);
  if (last !== undefined) taskPanel.append(taskView(last.task, last.label));

  let busy = false;
  /** Starts an action that answers with a task, and follows it in the task panel. */
  const runTask = async (label: string, started: () => Promise<Task>): Promise<void> => {
    busy = true;
    const show = (t: Task): void => {
      lastTask.set(vm.id, { task: t, label });
      taskPanel.replaceChildren(taskView(t, label));
    };
    try {
      const t = await started();
      show(t);
      const final = await ctx.api.waitTask(t, { onProgress: show });
      if (final.state === 'failed') ctx.flash(taskError(final));
      else ctx.flash(`${label}: done.`);
    } catch (err) {
      ctx.flash(err);
    }
    busy = false;
    if (!ctx.signal.aborted) ctx.refresh();
  };

  const hostName = (hostId: string): string => hosts.find((x) => x.id === hostId)?.name ?? hostId;
  // Changed elsewhere (the CLI, a script, another user)? Say so rather than re-render under
  // the user's hands: the banner's button loads the page again.
  const stale = h('div', { id: 'vm-stale' });
  const seen = fingerprint(vm);
  ctx.every(3000, async () => {
    if (busy || stale.childElementCount > 0) return;
    if (fingerprint(await ctx.api.getVm(id)) === seen) return;
    stale.replaceChildren(
      h(
        'p',
        { class: 'stale' },
        'This VM was changed elsewhere. ',
        h('button', { type: 'button', id: 'vm-reload', onclick: () => ctx.refresh() }, 'Reload'),
      ),
    );
  });
  ctx.show(
    stale,
    h('p', { class: 'crumbs' }, h('a', { href: '#/vms' }, 'Virtual machines'), ' / ', vm.name),
    h('h1', { id: 'vm-title' }, vm.name, ' ', vmBadges(vm)),
    details(vm, hostName, policies),
    h('section', { class: 'card' }, h('h2', {}, 'Power'), powerButtons(ctx, vm, runTask), taskPanel),
    settings(ctx, vm),
    encryption(ctx, vm, policies, runTask),
    migration(ctx, vm, hosts, runTask),
    consoleView(ctx, vm),
  );
}

/** What the page shows of a VM that can change under it. */
function fingerprint(vm: Vm): string {
  return JSON.stringify([vm.version, vm.state, vm.hostId, vm.encryption, vm.locked, vm.pendingRestart]);
}

function details(vm: Vm, hostName: (id: string) => string, policies: readonly EncryptionPolicy[]): UiElement {
  const c = vm.config;
  const item = (k: string, v: string): UiElement[] => [h('dt', {}, k), h('dd', {}, v)];
  const policy = vm.encryption ? (policies.find((p) => p.id === vm.encryption?.policyId)?.name ?? '') : '';
  return h(
    'dl',
    { class: 'details card' },
    ...item('Id', vm.id),
    ...item('Host', hostName(vm.hostId)),
    ...item('State', vm.pendingRestart ? `${vm.state} (changes apply at the next power-on)` : vm.state),
    ...item('CPUs / memory', `${c.cpus} / ${c.memoryMiB} MiB`),
    ...item('Firmware', c.firmware.toUpperCase()),
    ...item('Disks', c.disks.map((d) => `${d.id} ${d.sizeMiB} MiB`).join(', ') || 'none'),
    ...item('NICs', c.nics.map((n) => `${n.id} on ${n.network}`).join(', ') || 'none'),
    ...item('Tags', c.tags.join(', ') || 'none'),
    ...item('Encryption', vm.encryption ? `policy ${policy}, key ${vm.encryption.keyId}` : 'not encrypted'),
    ...(vm.locked ? item('Locked', vm.lockedReason ?? 'its key cannot be had') : []),
    ...item('Updated', time(vm.updatedAt)),
  );
}

function powerButtons(
  ctx: PageContext,
  vm: Vm,
  runTask: (label: string, started: () => Promise<Task>) => Promise<void>,
): UiElement {
  const button = (label: string, op: PowerOp, id: string, when: 'stopped' | 'running'): UiElement => {
    const stateReason =
      vm.state !== when
        ? `VM is ${vm.state}`
        : op === 'powerOnVm' && vm.locked
          ? `locked: ${vm.lockedReason ?? 'its key cannot be had'}`
          : null;
    const b = h(
      'button',
      {
        id,
        onclick: () => {
          b.disabled = true;
          void runTask(label, () => ctx.api[op](vm.id));
        },
      },
      label,
    );
    return guarded(b, ctx.access.reason(op) ?? stateReason);
  };
  return h(
    'div',
    { class: 'actions' },
    button('Power on', 'powerOnVm', 'power-on', 'stopped'),
    button('Shut down', 'shutdownVm', 'shutdown', 'running'),
    button('Power off', 'powerOffVm', 'power-off', 'running'),
    button('Reset', 'resetVm', 'reset', 'running'),
  );
}

function settings(ctx: PageContext, vm: Vm): UiElement {
  const c = vm.config;
  const reason = ctx.access.reason('updateVm');
  const save = async (patch: VmPatch, done: string): Promise<void> => {
    try {
      await ctx.api.updateVm(vm.id, patch);
      ctx.flash(done);
    } catch (err) {
      ctx.flash(err);
    }
    ctx.refresh();
  };
  const efiReason = c.firmware === 'efi' ? null : 'needs EFI firmware';
  const secureBoot = h('input', {
    type: 'checkbox',
    id: 'secure-boot',
    checked: c.secureBoot,
    onchange: () =>
      void save(
        { secureBoot: secureBoot.checked },
        `Secure Boot ${secureBoot.checked ? 'enabled' : 'disabled'}.`,
      ),
  });
  const vtpm = h('input', {
    type: 'checkbox',
    id: 'vtpm',
    checked: c.vtpm === true,
    onchange: () => void save({ vtpm: vtpm.checked }, `vTPM ${vtpm.checked ? 'added' : 'removed'}.`),
  });
  const mode = select(
    {
      id: 'migration-mode',
      value: c.migrationEncryption ?? 'opportunistic',
      onchange: () => {
        const v = mode.value === 'disabled' || mode.value === 'required' ? mode.value : 'opportunistic';
        void save({ migrationEncryption: v }, `Migration encryption: ${v}.`);
      },
    },
    [
      ['disabled', 'disabled (plaintext)'],
      ['opportunistic', 'opportunistic'],
      ['required', 'required'],
    ],
  );
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, 'Security settings'),
    check(secureBoot, 'UEFI Secure Boot', reason ?? efiReason),
    check(vtpm, 'vTPM 2.0', reason ?? efiReason),
    field('Migration encryption', guarded(mode, reason)),
    vm.state === 'stopped'
      ? null
      : h('p', { class: 'muted' }, 'Hardware changes apply at the next power-on.'),
  );
}

/** A checkbox with its label, refused with a reason when there is one. */
function check(box: UiElement, label: string, reason: string | null): UiElement {
  return h('div', { class: 'check' }, guarded(box, reason, h('label', {}, box, ` ${label}`)));
}

function encryption(
  ctx: PageContext,
  vm: Vm,
  policies: readonly EncryptionPolicy[],
  runTask: (label: string, started: () => Promise<Task>) => Promise<void>,
): UiElement {
  const stopped = vm.state === 'stopped' ? null : 'power the VM off first';
  if (vm.encryption) {
    const decrypt = h(
      'button',
      { id: 'decrypt', onclick: () => void runTask('Decrypt', () => ctx.api.decryptVm(vm.id)) },
      'Decrypt',
    );
    return h(
      'section',
      { class: 'card' },
      h('h2', {}, 'Encryption'),
      h(
        'p',
        {},
        'Encrypted; the key encryption key stays on its key provider: ',
        h('code', {}, vm.encryption.keyId),
      ),
      guarded(decrypt, ctx.access.reason('decryptVm') ?? stopped),
    );
  }
  const sorted = [...policies].sort((a, b) => Number(b.builtin) - Number(a.builtin));
  const policy = select(
    { id: 'encryption-policy' },
    sorted.map((p) => [p.id, p.builtin ? `${p.name} (built-in)` : p.name] as const),
  );
  const acceptNoBackup = h('input', { type: 'checkbox', id: 'accept-no-backup' });
  const encrypt = h(
    'button',
    {
      id: 'encrypt',
      class: 'primary',
      onclick: () =>
        void runTask('Encrypt', () =>
          ctx.api.encryptVm(vm.id, {
            policyId: policy.value,
            ...(acceptNoBackup.checked ? { acceptNoBackup: true } : {}),
          }),
        ),
    },
    'Encrypt',
  );
  const reason = ctx.access.reason('encryptVm');
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, 'Encryption'),
    h('p', { class: 'muted' }, 'Not encrypted.'),
    field('Encryption policy', guarded(policy, reason)),
    check(acceptNoBackup, 'Encrypt even though the key server was never backed up', reason),
    guarded(encrypt, reason ?? stopped),
  );
}

function migration(
  ctx: PageContext,
  vm: Vm,
  hosts: readonly Host[],
  runTask: (label: string, started: () => Promise<Task>) => Promise<void>,
): UiElement {
  const others = hosts.filter((x) => x.id !== vm.hostId && x.state === 'connected');
  const dest = select(
    { id: 'migrate-host' },
    others.map((x) => [x.id, x.name] as const),
  );
  const dialog = h(
    'dialog',
    { id: 'migrate-dialog' },
    h(
      'form',
      {
        onsubmit: (ev) => {
          ev.preventDefault();
          dialog.close();
          const hostId = dest.value;
          void runTask('Migrate', () => ctx.api.migrateVm(vm.id, { hostId }));
        },
      },
      h('h2', {}, `Migrate ${vm.name}`),
      field('Destination host', dest),
      h(
        'p',
        { class: 'muted' },
        `Migration encryption: ${vm.config.migrationEncryption ?? 'opportunistic'}`,
        vm.encryption ? ' (an encrypted VM always migrates encrypted)' : '',
      ),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'submit', class: 'primary', id: 'migrate-confirm' }, 'Migrate'),
        h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel'),
      ),
    ),
  );
  const open = h('button', { id: 'migrate', onclick: () => dialog.showModal() }, 'Migrate…');
  const stateReason =
    vm.state !== 'running'
      ? `VM is ${vm.state}: only a running VM migrates`
      : others.length === 0
        ? 'no other connected host'
        : null;
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, 'Migration'),
    guarded(open, ctx.access.reason('migrateVm', vm.encryption ? ['crypto.migrate'] : []) ?? stateReason),
    dialog,
  );
}

function consoleView(ctx: PageContext, vm: Vm): UiElement {
  const reason = ctx.access.reason('getVmConsole', vm.encryption ? ['crypto.access'] : []);
  const section = h('section', { class: 'card' }, h('h2', {}, 'Serial console'));
  if (reason !== null) {
    section.append(h('p', { class: 'reason', id: 'console-reason' }, reason));
    return section;
  }
  const pre = h('pre', { id: 'console', class: 'console' });
  let offset = 0;
  const load = async (): Promise<void> => {
    const c = await ctx.api.getVmConsole(vm.id, { offset });
    if (c.data) pre.append(c.data);
    offset = c.next;
  };
  load().catch((err: unknown) => pre.replaceChildren(errorText(err)));
  if (vm.state === 'running') ctx.every(2000, load);
  section.append(pre);
  return section;
}
