// Our KMIP client against our embedded key server: the shared behavioural suite, then
// what only our server does (attribute editing, Register, ID placeholder batches, what
// Destroy leaves behind).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AttributeName, attr, encodeAttribute } from '../../src/kmip/attributes.js';
import { KmipClient } from '../../src/kmip/client.js';
import {
  CryptographicAlgorithm,
  CryptographicUsageMask,
  ObjectType,
  Operation,
  ResultStatus,
  RevocationReasonCode,
  State,
  enumName,
} from '../../src/kmip/enums.js';
import { required } from '../../src/kmip/messages.js';
import { Tag } from '../../src/kmip/tags.js';
import { ttlv } from '../../src/kmip/ttlv.js';
import type { RunningKms } from '../../src/kms/service.js';
import { startKms } from '../../src/kms/service.js';
import { kmipBehaviourSuite, refusedWith, stateOf, uniqueName } from './behaviour.js';

let dir: string | undefined;
let kms: RunningKms | undefined;

async function clientFor(identity: string): Promise<KmipClient> {
  assert.ok(kms !== undefined, 'the key server is not running');
  const cert = await kms.dataDir.issueClientCertificate(identity);
  return new KmipClient({
    host: kms.host,
    port: kms.port,
    ca: kms.dataDir.caCertPem(),
    cert: cert.certPem,
    key: cert.keyPem,
  });
}

function textValue(
  attributes: { name: string; value: { type: string; value: unknown } }[],
  name: string,
): unknown[] {
  return attributes
    .filter((a) => a.name === name)
    .map((a) => (a.value.type === 'TextString' ? a.value.value : a.value));
}

void describe('our embedded key server', () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hs-'));
    // masterKeyFile keeps the key out of $XDG_CONFIG_HOME / ~/.config.
    kms = await startKms({
      dataDir: join(dir, 'kms'),
      masterKeyFile: join(dir, 'master.key'),
      host: '127.0.0.1',
      port: 0,
    });
  });
  after(async () => {
    await kms?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  kmipBehaviourSuite('KMIP behaviour (Hyperseal KMS)', async () => {
    const [client, other] = await Promise.all([clientFor('hs-suite-owner'), clientFor('hs-suite-other')]);
    return {
      client,
      other,
      close: () => {
        client.close();
        other.close();
        return Promise.resolve();
      },
    };
  });

  void describe('Hyperseal KMS only', () => {
    let client: KmipClient | undefined;
    const c = (): KmipClient => {
      assert.ok(client !== undefined);
      return client;
    };
    before(async () => {
      client = await clientFor('hs-extra');
    });
    after(() => client?.close());

    void test('Add Attribute (x-custom), Modify Attribute and Get Attribute List', async () => {
      const uid = await c().create({ name: uniqueName('hs-attrs') });
      await c().addAttribute(uid, attr.text('x-custom', 'first'));
      assert.deepEqual(textValue(await c().getAttributes(uid), 'x-custom'), ['first']);
      // Only the asked-for attribute comes back when one is named.
      const named = await c().getAttributes(uid, ['x-custom']);
      assert.deepEqual(
        named.map((a) => a.name),
        ['x-custom'],
      );

      await c().modifyAttribute(uid, attr.text('x-custom', 'second'));
      assert.deepEqual(textValue(await c().getAttributes(uid), 'x-custom'), ['second']);

      const list = await c().getAttributeList(uid);
      for (const name of [
        'x-custom',
        AttributeName.UniqueIdentifier,
        AttributeName.ObjectType,
        AttributeName.CryptographicAlgorithm,
        AttributeName.CryptographicLength,
        AttributeName.State,
        AttributeName.Name,
      ]) {
        assert.ok(list.includes(name), `Get Attribute List should include '${name}': ${list.join(', ')}`);
      }
      assert.equal(new Set(list).size, list.length, 'Get Attribute List names each attribute once');
    });

    void test('Register of known key material, then Get returns exactly it', async () => {
      const material = randomBytes(32);
      const expected = Buffer.from(material);
      const uid = await c().register({ algorithm: CryptographicAlgorithm.AES, lengthBits: 256, material }, [
        attr.name(uniqueName('hs-registered')),
      ]);
      const key = await c().get(uid);
      assert.equal(key.algorithm, CryptographicAlgorithm.AES);
      assert.equal(key.lengthBits, 256);
      assert.ok(key.material.equals(expected), 'Get must return the registered bytes');
      assert.equal(enumName(State, await stateOf(c(), uid)), 'PreActive');
    });

    void test('batch: Create then Activate through the ID placeholder', async () => {
      const template = [
        attr.cryptographicAlgorithm(CryptographicAlgorithm.AES),
        attr.cryptographicLength(256),
        attr.cryptographicUsageMask(CryptographicUsageMask.Encrypt | CryptographicUsageMask.Decrypt),
      ];
      const [created, activated] = await c().batch([
        {
          operation: Operation.Create,
          payload: [
            ttlv.enum(Tag.ObjectType, ObjectType.SymmetricKey),
            ttlv.struct(Tag.TemplateAttribute, template.map(encodeAttribute)),
          ],
        },
        // No Unique Identifier: the server uses the one the Create produced.
        { operation: Operation.Activate, payload: [] },
      ]);
      assert.ok(created !== undefined && activated !== undefined);
      assert.equal(created.resultStatus, ResultStatus.Success, created.resultMessage);
      assert.equal(activated.resultStatus, ResultStatus.Success, activated.resultMessage);
      assert.equal(activated.operation, Operation.Activate);
      const uid = required(created.payload ?? [], Tag.UniqueIdentifier, 'TextString', 'Create').value;
      const activatedUid = required(
        activated.payload ?? [],
        Tag.UniqueIdentifier,
        'TextString',
        'Activate',
      ).value;
      assert.equal(activatedUid, uid);
      assert.equal(enumName(State, await stateOf(c(), uid)), 'Active');
    });

    void test('Locate does not list a destroyed key', async () => {
      const keyName = uniqueName('hs-destroyed');
      const uid = await c().create({ name: keyName });
      assert.deepEqual(await c().locate({ name: keyName }), [uid]);
      await c().destroy(uid);
      assert.deepEqual(await c().locate({ name: keyName }), []);
      const live = await c().locate({ algorithm: CryptographicAlgorithm.AES });
      assert.ok(!live.includes(uid), 'a destroyed key must not be located');
      // Its attributes remain: State says what happened.
      assert.equal(enumName(State, await stateOf(c(), uid)), 'Destroyed');
      assert.deepEqual(await c().locate({ name: keyName, state: State.Destroyed }), [uid]);
    });

    void test('Revoke with Key Compromise, then Destroy: Destroyed Compromised', async () => {
      const uid = await c().create();
      await c().activate(uid);
      await c().revoke(uid, RevocationReasonCode.KeyCompromise);
      assert.equal(enumName(State, await stateOf(c(), uid)), 'Compromised');
      await c().destroy(uid);
      assert.equal(enumName(State, await stateOf(c(), uid)), 'DestroyedCompromised');
      await refusedWith(c().get(uid), ['HS_ERR_KMIP_ITEM_NOT_FOUND'], 'Get of a destroyed key');
    });
  });
});
