/**
 * One persistent KMIP connection to one server of a key provider, sending batches with an
 * explicit Batch Error Continuation Option and matching answers to items by Unique Batch
 * Item ID. KmipClient.batch always asks for the default (Stop) and expects one answer per
 * item; servers answer a stopped batch differently (ours answers every item, the ones
 * after the failure as cancelled; PyKMIP 0.10 leaves them out), so here an item without
 * an answer comes back as `undefined`: not processed, safe to send again.
 */
import { HypersealError } from '../errors.js';
import { kmipFailure } from '../kmip/client.js';
import { BatchErrorContinuationOption, ResultStatus } from '../kmip/enums.js';
import type { RequestBatchItem, ResponseBatchItem, ResponseMessage } from '../kmip/messages.js';
import { KMIP_1_1, decodeResponse, encodeRequest } from '../kmip/messages.js';
import type { KmipTlsOptions } from '../kmip/transport.js';
import { KmipConnection } from '../kmip/transport.js';
import type { TtlvItem } from '../kmip/ttlv.js';
import { decodeTtlv, describeTtlv, encodeTtlv } from '../kmip/ttlv.js';
import { trace, traceEnabled } from '../trace.js';

export interface BatchItem {
  operation: number;
  payload: TtlvItem[];
}

export interface BatchOptions {
  /** Run every item even after one fails (KMIP Continue); default Stop. */
  continueOnError?: boolean;
}

export class KmipSession {
  private readonly connection: KmipConnection;

  constructor(opts: KmipTlsOptions) {
    this.connection = new KmipConnection(opts);
  }

  get address(): string {
    return this.connection.address;
  }

  close(): void {
    this.connection.close();
  }

  /**
   * Sends the items in one message. Each result is the item's answer, or undefined when
   * the server did not process it (a stopped batch). A message the server could not parse
   * at all is answered with one failure for the whole message: every item gets it.
   */
  async batch(
    items: readonly BatchItem[],
    opts: BatchOptions = {},
  ): Promise<(ResponseBatchItem | undefined)[]> {
    const many = items.length > 1;
    const batchItems: RequestBatchItem[] = items.map((i, n) =>
      many ? { ...i, uniqueBatchItemId: batchId(n) } : { ...i },
    );
    const frame = encodeTtlv(
      encodeRequest({
        protocolVersion: KMIP_1_1,
        ...(many && opts.continueOnError === true
          ? { batchErrorContinuation: BatchErrorContinuationOption.Continue }
          : {}),
        batchItems,
      }),
    );
    const msg = this.decode(await this.connection.roundTrip(frame));
    if (!many) return [msg.batchItems[0]];
    const only = msg.batchItems[0];
    if (msg.batchItems.length === 1 && only !== undefined && only.uniqueBatchItemId === undefined) {
      if (only.resultStatus === ResultStatus.Success) {
        throw new HypersealError(
          'HS_ERR_KMIP_BAD_RESPONSE',
          `${this.address} answered a batch with one unnamed item`,
        );
      }
      return items.map(() => only);
    }
    return batchItems.map((b) =>
      msg.batchItems.find((r) => r.uniqueBatchItemId?.equals(b.uniqueBatchItemId as Buffer)),
    );
  }

  /** One operation; throws the KMIP failure (HS_ERR_KMIP_*) or returns the payload. */
  async call(operation: number, payload: TtlvItem[]): Promise<TtlvItem[]> {
    const [item] = await this.batch([{ operation, payload }]);
    if (item === undefined)
      throw new HypersealError('HS_ERR_KMIP_BAD_RESPONSE', `${this.address} sent an empty response`);
    if (item.resultStatus !== ResultStatus.Success) throw kmipFailure(this.address, operation, item);
    return item.payload ?? [];
  }

  /** A malformed answer is the server's fault: reported as such (and failed over by the cluster). */
  private decode(frame: Buffer): ResponseMessage {
    try {
      const root = decodeTtlv(frame);
      if (traceEnabled('kmip'))
        trace('kmip', 'response', { address: this.address, ttlv: describeTtlv(root) });
      return decodeResponse(root);
    } catch (err) {
      if (err instanceof HypersealError && err.code.startsWith('HS_ERR_KMIP_')) {
        throw new HypersealError(
          'HS_ERR_KMIP_BAD_RESPONSE',
          `${this.address} sent an invalid KMIP response: ${err.message}`,
          { cause: err.code },
        );
      }
      throw err;
    }
  }
}

/** Unique Batch Item IDs 1, 2, … as big-endian bytes. */
function batchId(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n + 1);
  return b;
}
