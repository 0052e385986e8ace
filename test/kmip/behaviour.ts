// One behavioural suite for any KMIP 1.1 server our client must work with. Each server
// test file (ours, PyKMIP) registers it with a connect() that hands out two clients of
// different identities. Where servers legitimately differ, the assertions accept the
// documented set of answers; nothing is skipped per server.
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { ErrorCode } from '../../src/errors.js';
import { HypersealError } from '../../src/errors.js';
import type { KmipAttribute } from '../../src/kmip/attributes.js';
import { AttributeName } from '../../src/kmip/attributes.js';
import type { KmipClient } from '../../src/kmip/client.js';
import {
  CryptographicAlgorithm,
  Operation,
  RevocationReasonCode,
  State,
  enumName,
} from '../../src/kmip/enums.js';

export interface KmipBehaviourConnection {
  client: KmipClient;
  /** A second client identity: it must not be able to use `client`'s objects. */
  other: KmipClient;
  close(): Promise<void>;
}

/** Codes a server may use to refuse an operation the object's state forbids. */
const STATE_REFUSALS: ErrorCode[] = ['HS_ERR_KMIP_PERMISSION_DENIED', 'HS_ERR_KMIP_ILLEGAL_OPERATION'];
/** Codes for another identity's object: ours says Item Not Found, PyKMIP Permission Denied. */
const FOREIGN_REFUSALS: ErrorCode[] = ['HS_ERR_KMIP_ITEM_NOT_FOUND', 'HS_ERR_KMIP_PERMISSION_DENIED'];

/** Awaits a promise that must fail with a HypersealError whose code is one of `codes`. */
export async function refusedWith(
  promise: Promise<unknown>,
  codes: ErrorCode[],
  what: string,
): Promise<HypersealError> {
  let outcome: unknown;
  try {
    outcome = await promise;
  } catch (err) {
    assert.ok(err instanceof HypersealError, `${what}: expected a HypersealError, got ${String(err)}`);
    assert.ok(
      codes.includes(err.code),
      `${what}: expected one of ${codes.join(', ')}, got ${err.code}: ${err.message}`,
    );
    return err;
  }
  return assert.fail(
    `${what}: expected a refusal (${codes.join(' or ')}), but it succeeded: ${JSON.stringify(outcome)}`,
  );
}

/** The value of a single-valued Enumeration attribute (e.g. State) in a Get Attributes answer. */
export function enumAttribute(attributes: KmipAttribute[], name: string): number {
  const found = attributes.filter((a) => a.name === name);
  assert.equal(
    found.length,
    1,
    `expected exactly one '${name}' in ${attributes.map((a) => a.name).join(', ')}`,
  );
  const value = found[0]?.value;
  assert.equal(value?.type, 'Enumeration', `'${name}' should be an Enumeration`);
  return value.value;
}

export async function stateOf(client: KmipClient, uid: string): Promise<number> {
  return enumAttribute(await client.getAttributes(uid), AttributeName.State);
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

function stateName(state: number): string {
  return enumName(State, state);
}

export function kmipBehaviourSuite(name: string, connect: () => Promise<KmipBehaviourConnection>): void {
  void describe(name, () => {
    let conn: KmipBehaviourConnection | undefined;
    const client = (): KmipClient => {
      assert.ok(conn !== undefined, 'connect() did not run');
      return conn.client;
    };
    const other = (): KmipClient => {
      assert.ok(conn !== undefined, 'connect() did not run');
      return conn.other;
    };

    before(async () => {
      conn = await connect();
    });
    after(async () => {
      await conn?.close();
    });

    void test('AES-256 lifecycle: create, get, activate, refuse destroy while Active, revoke, destroy', async () => {
      const c = client();
      const keyName = uniqueName('hs-lifecycle');
      const uid = await c.create({ name: keyName });
      assert.ok(uid.length > 0);

      const key = await c.get(uid);
      assert.equal(key.uniqueIdentifier, uid);
      assert.equal(key.algorithm, CryptographicAlgorithm.AES);
      assert.equal(key.lengthBits, 256);
      assert.equal(key.material.length, 32);
      assert.ok(!key.material.equals(Buffer.alloc(32)), 'key material must not be all zeroes');

      // All attributes, not just State: every one the server sends must decode.
      const attributes = await c.getAttributes(uid);
      assert.equal(stateName(enumAttribute(attributes, AttributeName.State)), 'PreActive');
      assert.equal(
        enumAttribute(attributes, AttributeName.CryptographicAlgorithm),
        CryptographicAlgorithm.AES,
      );

      await c.activate(uid);
      assert.equal(stateName(await stateOf(c, uid)), 'Active');

      await refusedWith(c.destroy(uid), STATE_REFUSALS, 'Destroy of an Active key');
      const stillThere = await c.get(uid);
      assert.ok(stillThere.material.equals(key.material), 'a refused Destroy must leave the key intact');
      assert.equal(stateName(await stateOf(c, uid)), 'Active');

      await c.revoke(uid, RevocationReasonCode.CessationOfOperation, 'end of test');
      assert.equal(stateName(await stateOf(c, uid)), 'Deactivated');
      await c.destroy(uid);
      await refusedWith(c.get(uid), ['HS_ERR_KMIP_ITEM_NOT_FOUND'], 'Get after Destroy');
    });

    void test('AES-128 and AES-192 keys', async () => {
      const c = client();
      for (const bits of [128, 192]) {
        const uid = await c.create({ lengthBits: bits });
        const key = await c.get(uid);
        assert.equal(key.algorithm, CryptographicAlgorithm.AES);
        assert.equal(key.lengthBits, bits);
        assert.equal(key.material.length, bits / 8);
      }
    });

    void test('Locate by name finds exactly the named key; an unused name finds nothing', async () => {
      const c = client();
      const keyName = uniqueName('hs-locate');
      const uid = await c.create({ name: keyName });
      await c.create({ name: uniqueName('hs-locate-decoy') });
      assert.deepEqual(await c.locate({ name: keyName }), [uid]);
      assert.deepEqual(await c.locate({ name: uniqueName('hs-never-used') }), []);
    });

    void test('Locate by State and Cryptographic Algorithm combined', async () => {
      const c = client();
      const activeName = uniqueName('hs-locate-active');
      const active = await c.create({ name: activeName });
      const preActive = await c.create({ name: uniqueName('hs-locate-preactive') });
      await c.activate(active);

      const activeAes = await c.locate({ state: State.Active, algorithm: CryptographicAlgorithm.AES });
      assert.ok(
        activeAes.includes(active),
        `Active AES keys should include ${active}: ${activeAes.join(', ')}`,
      );
      assert.ok(!activeAes.includes(preActive), 'a Pre-Active key must not match State = Active');

      const preActiveAes = await c.locate({ state: State.PreActive, algorithm: CryptographicAlgorithm.AES });
      assert.ok(preActiveAes.includes(preActive), `Pre-Active AES keys should include ${preActive}`);
      assert.ok(!preActiveAes.includes(active), 'an Active key must not match State = Pre-Active');

      const rsa = await c.locate({ state: State.Active, algorithm: CryptographicAlgorithm.RSA });
      assert.ok(!rsa.includes(active), 'an AES key must not match Cryptographic Algorithm = RSA');

      assert.deepEqual(await c.locate({ name: activeName, state: State.Active }), [active]);
      assert.deepEqual(await c.locate({ name: activeName, state: State.PreActive }), []);
    });

    void test('Query lists the operations we rely on', async () => {
      const result = await client().query();
      for (const op of [Operation.Create, Operation.Get, Operation.Destroy, Operation.Locate]) {
        assert.ok(
          result.operations.includes(op),
          `Query should list ${enumName(Operation, op)}: ${result.operations.map((o) => enumName(Operation, o)).join(', ')}`,
        );
      }
    });

    void test('Discover Versions includes 1.1', async () => {
      const versions = await client().discoverVersions();
      assert.ok(
        versions.some((v) => v.major === 1 && v.minor === 1),
        `versions: ${versions.map((v) => `${v.major}.${v.minor}`).join(', ')}`,
      );
    });

    void test('Activate of an Active key is refused', async () => {
      const c = client();
      const uid = await c.create();
      await c.activate(uid);
      await refusedWith(c.activate(uid), STATE_REFUSALS, 'second Activate');
      assert.equal(stateName(await stateOf(c, uid)), 'Active');
    });

    void test('Get of an unknown identifier: Item Not Found with the server’s message', async () => {
      // Numeric, so it is a well-formed identifier for PyKMIP (integer ids) as well as ours.
      const unknown = String(900_000_000 + randomInt(99_999_999));
      const err = await refusedWith(
        client().get(unknown),
        ['HS_ERR_KMIP_ITEM_NOT_FOUND'],
        'Get of an unknown id',
      );
      assert.match(err.message, /^KMIP Get on \S+ failed \(OperationFailed, ItemNotFound\): /);
      // Both servers word it the same way, and name the identifier.
      assert.ok(err.message.includes(`Could not locate object: ${unknown}`), err.message);
      assert.equal(err.details?.resultReason, 'ItemNotFound');
    });

    void test('another identity cannot get, destroy or activate the owner’s key', async () => {
      const owner = client();
      const stranger = other();
      const uid = await owner.create({ name: uniqueName('hs-owned') });
      const original = await owner.get(uid);

      await refusedWith(stranger.get(uid), FOREIGN_REFUSALS, 'Get by another identity');
      await refusedWith(stranger.destroy(uid), FOREIGN_REFUSALS, 'Destroy by another identity');
      await refusedWith(stranger.activate(uid), FOREIGN_REFUSALS, 'Activate by another identity');

      const afterwards = await owner.get(uid);
      assert.ok(afterwards.material.equals(original.material), 'the owner still has the same key');
      assert.equal(
        stateName(await stateOf(owner, uid)),
        'PreActive',
        'the stranger’s Activate had no effect',
      );
    });

    void test('pipelining: 50 concurrent Creates on one connection', async () => {
      const c = client();
      const uids = await Promise.all(Array.from({ length: 50 }, () => c.create()));
      assert.equal(uids.length, 50);
      assert.equal(new Set(uids).size, 50, 'every Create must return its own identifier');
      for (const uid of uids) assert.ok(typeof uid === 'string' && uid.length > 0);
    });
  });
}
