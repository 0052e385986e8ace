/** Which VMs a posture rule selects (docs/posture.md#selection). Pure. */
import type { Vm } from '../sdk/api.gen.js';
import type { Selector } from './schema.js';

function escape(s: string): string {
  return s.replace(/[.+^${}()|[\]\\]/g, '\\$&');
}

/** `web-*`: `*` any run of characters, `?` one; everything else literal; whole name. */
export function nameGlob(glob: string): RegExp {
  return new RegExp(`^${escape(glob).replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
}

/**
 * Folder conditions: `/prod/payments` exactly that folder; `*` and `?` within one
 * segment (`/prod/*`: the direct subfolders of /prod); a `**` segment any number of
 * segments, none included (`/prod/**`: /prod and everything below it).
 */
export function folderGlob(glob: string): RegExp {
  const segments = glob.split('/').slice(1);
  let body = '';
  for (const seg of segments) {
    if (seg === '**') body += '(?:/[^/]+)*';
    else body += '/' + escape(seg).replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  }
  return new RegExp(`^${body}$`);
}

export type VmMatcher = (vm: Vm) => boolean;

export function compileSelector(s: Selector): VmMatcher {
  const name = s.namePattern === undefined ? undefined : nameGlob(s.namePattern);
  const folder = s.folder === undefined ? undefined : folderGlob(s.folder);
  return (vm) =>
    (name === undefined || name.test(vm.name)) &&
    (s.tag === undefined || vm.config.tags.includes(s.tag)) &&
    (folder === undefined || (vm.config.folder !== undefined && folder.test(vm.config.folder))) &&
    (s.network === undefined || vm.config.nics.some((n) => n.network === s.network));
}

/** `namePattern=web-*, tag=pci`: how a plan names a rule without a name. */
export function describeSelector(s: Selector): string {
  return Object.entries(s)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(', ');
}
