/**
 * Renders the typed SDK (`src/sdk/api.gen.ts`) from the manager's OpenAPI document: one
 * type per titled schema, one method per operation named by its operationId. The test
 * beside this file renders it again from the live route table and fails when the
 * committed file differs, so the SDK cannot drift from the API (`npm run sdk` rewrites it).
 *
 * Pure: no I/O; the caller supplies the document and writes the text.
 */

interface Schema {
  title?: string;
  description?: string;
  type?: string | string[];
  const?: unknown;
  enum?: unknown[];
  anyOf?: Schema[];
  oneOf?: Schema[];
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  patternProperties?: Record<string, Schema>;
  $ref?: string;
}

interface Parameter {
  name: string;
  in: 'path' | 'query';
  required: boolean;
  schema: Schema;
}

interface Operation {
  operationId: string;
  summary: string;
  'x-privilege': string | string[];
  parameters: Parameter[];
  requestBody?: { content: { 'application/json': { schema: Schema } } };
  responses: Record<string, { content?: { 'application/json': { schema: Schema } } }>;
}

export interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>;
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** Types named by their schema's title, checked to be one shape per name. */
class NamedTypes {
  private readonly shapes = new Map<string, string>();
  private readonly order: string[] = [];
  readonly declarations = new Map<string, string>();

  constructor(private readonly render: (s: Schema, indent: string, named: boolean) => string) {}

  ref(s: Schema): string {
    const name = s.title ?? '';
    const shape = JSON.stringify(s);
    const known = this.shapes.get(name);
    if (known === undefined) {
      this.shapes.set(name, shape);
      this.order.push(name);
      this.declarations.set(name, this.declare(name, s));
    } else if (known !== shape) {
      throw new Error(`two different schemas are titled ${name}: give one another title`);
    }
    return name;
  }

  private declare(name: string, s: Schema): string {
    const body = this.render(s, '', false);
    const doc = docComment(s.description, '');
    return body.startsWith('{')
      ? `${doc}export interface ${name} ${body}\n`
      : `${doc}export type ${name} = ${body};\n`;
  }

  all(): string[] {
    return this.order.map((n) => this.declarations.get(n) ?? '');
  }
}

function docComment(text: string | undefined, indent: string): string {
  if (text === undefined || text === '') return '';
  const safe = text.replace(/\*\//g, '*\\/');
  return `${indent}/** ${safe} */\n`;
}

const pascal = (id: string): string => id.charAt(0).toUpperCase() + id.slice(1);

export function renderSdk(doc: OpenApiDocument): string {
  const named: NamedTypes = new NamedTypes((s, indent, useNames) => tsType(s, indent, useNames));

  function tsType(s: Schema, indent: string, useNames = true): string {
    if (useNames && s.title !== undefined) return named.ref(s);
    if (s.$ref !== undefined) return s.$ref.split('/').at(-1) ?? 'unknown';
    if (s.const !== undefined) return JSON.stringify(s.const);
    if (s.enum !== undefined) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
    const alternatives = s.anyOf ?? s.oneOf;
    if (alternatives !== undefined) return alternatives.map((a) => wrap(tsType(a, indent))).join(' | ');
    if (Array.isArray(s.type)) return s.type.map((t) => tsType({ ...s, type: t }, indent)).join(' | ');
    switch (s.type) {
      case 'string':
        return 'string';
      case 'integer':
      case 'number':
        return 'number';
      case 'boolean':
        return 'boolean';
      case 'null':
        return 'null';
      case 'array':
        return s.items === undefined ? 'unknown[]' : `${wrap(tsType(s.items, indent))}[]`;
      case 'object':
        return objectType(s, indent);
      default:
        return 'unknown';
    }
  }

  function wrap(t: string): string {
    return /[|&]/.test(t) && !t.startsWith('{') ? `(${t})` : t;
  }

  function objectType(s: Schema, indent: string): string {
    const props = Object.entries(s.properties ?? {});
    const extra =
      typeof s.additionalProperties === 'object'
        ? tsType(s.additionalProperties, indent)
        : s.patternProperties !== undefined
          ? Object.values(s.patternProperties)
              .map((p) => tsType(p, indent))
              .join(' | ')
          : props.length === 0 && s.additionalProperties !== false
            ? 'unknown'
            : undefined;
    if (props.length === 0) return extra === undefined ? 'Record<string, never>' : `Record<string, ${extra}>`;
    const inner = `${indent}  `;
    const required = new Set(s.required ?? []);
    const lines = props.map(([key, p]) => {
      const k = IDENT.test(key) ? key : JSON.stringify(key);
      return `${docComment(p.description, inner)}${inner}${k}${required.has(key) ? '' : '?'}: ${tsType(p, inner)};`;
    });
    if (extra !== undefined) lines.push(`${inner}[key: string]: ${extra};`);
    return `{\n${lines.join('\n')}\n${indent}}`;
  }

  /** An operation-level type: the titled one, or an alias named after the operation. */
  function typeFor(s: Schema, aliasName: string, aliases: string[]): string {
    if (s.title !== undefined) return named.ref(s);
    aliases.push(`${docComment(s.description, '')}export type ${aliasName} = ${tsType(s, '')};\n`);
    return aliasName;
  }

  const aliases: string[] = [];
  const methods: string[] = [];
  const operations: string[] = [];
  const entries = Object.entries(doc.paths)
    .flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })))
    .sort((a, b) => a.op.operationId.localeCompare(b.op.operationId));
  for (const { path, method, op } of entries) {
    const id = op.operationId;
    const relative = path.replace(/^\/api\/v1/, '');
    const pathParams = op.parameters.filter((p) => p.in === 'path');
    const queryParams = op.parameters.filter((p) => p.in === 'query');
    const args: string[] = pathParams.map((p) => `${p.name}: string`);
    const bodySchema = op.requestBody?.content['application/json'].schema;
    if (bodySchema !== undefined) {
      const optional = (bodySchema.required ?? []).length === 0;
      // A body of optional fields may be left out: `{}` is sent (the server wants an object).
      args.push(`body: ${typeFor(bodySchema, `${pascal(id)}Body`, aliases)}${optional ? ' = {}' : ''}`);
    }
    const [status, response] = Object.entries(op.responses).find(([k]) => k !== 'default') ?? ['200', {}];
    const responseSchema = response.content?.['application/json'].schema;
    const isStream = responseSchema?.description === 'text/event-stream';
    if (isStream) args.push('onData: (data: string) => void');
    let queryType: string | undefined;
    if (queryParams.length > 0) {
      const query: Schema = {
        type: 'object',
        properties: Object.fromEntries(queryParams.map((p) => [p.name, p.schema])),
        required: queryParams.filter((p) => p.required).map((p) => p.name),
      };
      queryType = typeFor(query, `${pascal(id)}Query`, aliases);
      args.push(`query${queryParams.some((p) => p.required) ? '' : '?'}: ${queryType}`);
    }
    let result: string;
    if (status === '204' || responseSchema === undefined) result = 'void';
    else if (isStream) result = 'void';
    else result = typeFor(responseSchema, `${pascal(id)}Response`, aliases);
    const privilege = Array.isArray(op['x-privilege']) ? op['x-privilege'].join(' + ') : op['x-privilege'];
    const url = `\`${relative.replace(/\{([A-Za-z0-9_]+)\}/g, '${encodeURIComponent($1)}')}\``;
    const callOpts = [
      ...(queryType !== undefined ? ['query'] : []),
      ...(bodySchema !== undefined ? ['body'] : []),
    ];
    const doc = `  /** ${op.summary.replace(/\*\//g, '*\\/')}. \`${method.toUpperCase()} ${relative}\` (privilege: ${privilege}). */\n`;
    if (isStream) {
      args.push('signal?: AbortSignal');
      methods.push(
        `${doc}  ${id}(${args.join(', ')}): Promise<void> {\n` +
          `    return this.transport.stream(${url}, { ${[...callOpts, 'onData', 'signal'].join(', ')} });\n  }\n`,
      );
    } else {
      methods.push(
        `${doc}  ${id}(${args.join(', ')}): Promise<${result}> {\n` +
          `    return this.transport.request<${result}>('${method.toUpperCase()}', ${url}${callOpts.length > 0 ? `, { ${callOpts.join(', ')} }` : ''});\n  }\n`,
      );
    }
    operations.push(
      `  ${id}: { method: '${method.toUpperCase()}', path: '${relative}', privilege: ${JSON.stringify(op['x-privilege'])} },`,
    );
  }

  return [
    '// Generated by `npm run sdk` from the manager’s OpenAPI document (src/sdk/generate.ts).',
    '// Do not edit: src/sdk/generate.test.ts fails when this file and the API differ.',
    "import type { Transport } from './transport.js';",
    '',
    ...named.all(),
    ...aliases,
    '/** Every operation: its method, path and the privilege it needs (the web UI disables what a user lacks). */',
    'export const operations = {',
    ...operations,
    '} as const;',
    'export type OperationId = keyof typeof operations;',
    '',
    '/** One method per API operation; a Transport carries the calls (Node: https + CA; browser: fetch). */',
    'export class HypersealApi {',
    '  constructor(readonly transport: Transport) {}',
    '',
    methods.join('\n'),
    '}',
    '',
  ].join('\n');
}
