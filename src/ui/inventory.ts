/** Inventory: hosts, and the VM list with its create form. */
import type { Host, VmCreate } from '../sdk/api.gen.js';
import type { PageContext } from './app.js';
import type { UiElement } from './dom.js';
import { field, guarded, h, row, select, table, win } from './dom.js';
import { badge, time, vmBadges } from './format.js';

function hostBadges(host: Host): UiElement {
  return h(
    'span',
    { class: 'badges' },
    badge(host.state, `host-${host.state}`),
    host.simulated ? badge('simulated', 'simulated', 'the agent runs the sim driver') : null,
  );
}

export async function hostsPage(ctx: PageContext): Promise<void> {
  const reason = ctx.access.reason('listHosts');
  if (reason !== null) return ctx.show(h('h1', {}, 'Hosts'), h('p', { class: 'reason' }, reason));
  const hosts = await ctx.api.listHosts();
  ctx.show(
    h('h1', {}, 'Hosts'),
    table(
      ['Name', 'Address', 'State', 'Certificate', 'Joined'],
      hosts.map((x) =>
        row(
          x.name,
          x.address,
          hostBadges(x),
          h('code', { title: x.certFingerprint }, x.certFingerprint.slice(0, 16)),
          time(x.joinedAt),
        ),
      ),
      'No hosts have joined yet.',
    ),
  );
}

/** VMs shown per page, and what the list is filtered by (kept while the user moves around). */
const VM_PAGE = 200;
const vmList = { tag: '', search: '', offset: 0 };

export async function vmsPage(ctx: PageContext): Promise<void> {
  const reason = ctx.access.reason('listVms');
  if (reason !== null) return ctx.show(h('h1', {}, 'Virtual machines'), h('p', { class: 'reason' }, reason));
  // One more than a page: whether there is a next page.
  const [found, hosts] = await Promise.all([
    ctx.api.listVms({
      limit: VM_PAGE + 1,
      offset: vmList.offset,
      ...(vmList.tag ? { tag: vmList.tag } : {}),
      ...(vmList.search ? { search: vmList.search } : {}),
    }),
    ctx.access.can('listHosts') ? ctx.api.listHosts() : Promise.resolve([]),
  ]);
  const vms = found.slice(0, VM_PAGE);
  const hostName = (id: string): string => hosts.find((x) => x.id === id)?.name ?? id;
  const tag = h('input', { id: 'vm-filter-tag', value: vmList.tag, placeholder: 'any tag' });
  const search = h('input', {
    id: 'vm-filter-name',
    type: 'search',
    value: vmList.search,
    placeholder: 'part of the name',
    maxlength: 80,
  });
  const go = (offset: number): void => {
    vmList.offset = Math.max(0, offset);
    ctx.refresh();
  };
  const first = vms.length === 0 ? 0 : vmList.offset + 1;
  ctx.show(
    h('h1', {}, 'Virtual machines'),
    h(
      'form',
      {
        class: 'filters',
        id: 'vm-filters',
        onsubmit: (ev) => {
          ev.preventDefault();
          vmList.tag = tag.value.trim();
          vmList.search = search.value.trim();
          go(0);
        },
      },
      field('Name', search),
      field('Tag', tag),
      h('button', { type: 'submit' }, 'Filter'),
      h('span', { class: 'muted', id: 'vm-range' }, `${first}–${vmList.offset + vms.length}`),
      h(
        'button',
        {
          type: 'button',
          id: 'vms-prev',
          disabled: vmList.offset === 0,
          onclick: () => go(vmList.offset - VM_PAGE),
        },
        'Previous',
      ),
      h(
        'button',
        {
          type: 'button',
          id: 'vms-next',
          disabled: found.length <= VM_PAGE,
          onclick: () => go(vmList.offset + VM_PAGE),
        },
        'Next',
      ),
    ),
    table(
      ['Name', 'Host', 'CPUs', 'Memory', 'Firmware', 'Status'],
      vms.map((vm) =>
        row(
          h('a', { href: `#/vms/${encodeURIComponent(vm.id)}`, class: 'vm-link' }, vm.name),
          hostName(vm.hostId),
          vm.config.cpus,
          `${vm.config.memoryMiB} MiB`,
          vm.config.firmware.toUpperCase(),
          vmBadges(vm),
        ),
      ),
      vmList.tag || vmList.search ? 'No VMs match the filter.' : 'No VMs yet.',
    ),
    createVmForm(ctx, hosts),
  );
}

function createVmForm(ctx: PageContext, hosts: readonly Host[]): UiElement {
  const name = h('input', {
    id: 'vm-name',
    required: true,
    pattern: '[A-Za-z0-9][A-Za-z0-9 ._@()\\-]*',
    maxlength: 80,
  });
  const host = select(
    { id: 'vm-host' },
    hosts.filter((x) => x.state === 'connected').map((x) => [x.id, x.name] as const),
  );
  const firmware = select({ id: 'vm-firmware', value: 'efi' }, [
    ['efi', 'EFI (UEFI)'],
    ['bios', 'BIOS'],
  ]);
  const cpus = h('input', { id: 'vm-cpus', type: 'number', min: 1, max: 64, value: 1 });
  const memory = h('input', { id: 'vm-memory', type: 'number', min: 16, step: 16, value: 128 });
  const disk = h('input', { id: 'vm-disk', type: 'number', min: 0, value: 64 });
  const reason = ctx.access.reason('createVm', ctx.access.can('listDatastores') ? [] : ['datastore.read']);
  const create = async (): Promise<void> => {
    const body: VmCreate = {
      name: name.value.trim(),
      cpus: Number(cpus.value),
      memoryMiB: Number(memory.value),
      firmware: firmware.value === 'bios' ? 'bios' : 'efi',
      ...(host.value ? { hostId: host.value } : {}),
    };
    const sizeMiB = Number(disk.value);
    if (sizeMiB > 0) {
      const stores = await ctx.api.listDatastores();
      const hostId = host.value || undefined;
      const ds = stores.find((d) => d.hostId === hostId) ?? stores.find((d) => d.hostId === null);
      if (ds === undefined) throw new Error('no datastore on that host');
      body.disks = [{ id: 'disk0', sizeMiB, datastoreId: ds.id }];
    }
    const vm = await ctx.api.createVm(body);
    win().location.hash = `#/vms/${encodeURIComponent(vm.id)}`;
  };
  return h(
    'form',
    {
      class: 'card',
      id: 'create-vm',
      onsubmit: (ev) => {
        ev.preventDefault();
        create().catch(ctx.flash);
      },
    },
    h('h2', {}, 'Create a VM'),
    h(
      'div',
      { class: 'fields' },
      field('Name', name),
      field('Host', host),
      field('Firmware', firmware, 'Secure Boot and vTPM need EFI'),
      field('CPUs', cpus),
      field('Memory (MiB)', memory),
      field('Disk (MiB)', disk, '0: no disk'),
    ),
    guarded(h('button', { type: 'submit', class: 'primary', id: 'create-vm-submit' }, 'Create'), reason),
  );
}
