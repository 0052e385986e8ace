/**
 * Syslog sinks for enhanced logging: RFC 5424 (or JSON, or OCSF) over UDP, TCP or TLS,
 * with a durable on-disk queue per target so that nothing is lost while a collector is
 * down. format.ts is pure; queue.ts, transport.ts and sink.ts do the I/O.
 */
export {
  DEFAULT_APP_NAME,
  DEFAULT_FACILITY,
  ENTERPRISE_NUMBER,
  Facility,
  OCSF_VERSION,
  SD_ID_CHANGES,
  SD_ID_EVENT,
  SYSLOG_SEVERITY,
  escapeParamValue,
  createFormatter,
  formatMessages,
  frameOctetCounted,
  joinParts,
  OctetCountedDecoder,
  parseRfc5424,
  priority,
  sdParam,
  splitFrames,
  toJsonLine,
  toOcsf,
  toRfc5424,
  type FormatOptions,
  type HeaderOptions,
  type OcsfEvent,
  type ParsedMessage,
  type SdElement,
  type SyslogFormat,
} from './format.js';
export {
  DiskQueue,
  lockQueueDir,
  unlockQueueDir,
  type DiskQueueOptions,
  type QueuePosition,
  type QueueRecord,
} from './queue.js';
export { Sender, type SenderOptions, type SenderStats } from './sender.js';
export {
  CONNECTORS,
  connectTcp,
  connectTls,
  connectUdp,
  type Connector,
  type SyslogConnection,
  type TransportKind,
  type TransportOptions,
} from './transport.js';
export {
  DEFAULT_MAX_DATAGRAM_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  SyslogSink,
  type SyslogSinkOptions,
  type SyslogSinkStats,
  type SyslogTargetConfig,
} from './sink.js';
