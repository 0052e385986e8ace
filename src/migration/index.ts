/**
 * Encrypted migration: the frame codec (pure: AES-256-GCM frames with strict counter order,
 * or the same framing in the clear) and the data channel between two agents that carries
 * QEMU's migration stream through it. Protocol: docs/encrypted-migration.md. Traces:
 * HYPERSEAL_TRACE=migration (open, END, completion, failures; never key material).
 */
export {
  CipherId,
  FRAME,
  FrameOpener,
  FrameSealer,
  FrameType,
  MIGRATION_CIPHERS,
  decodeFrameHeader,
  encodeFrameHeader,
  openStream,
  sealStream,
  type FrameCodecParams,
  type FrameHeader,
  type MigrationCipher,
} from './frame.js';
export {
  MigrationReceiver,
  MigrationSender,
  type ChannelAddress,
  type MigrationChannelParams,
  type MigrationProgress,
  type MigrationReceiverOptions,
  type MigrationResult,
  type MigrationSenderOptions,
} from './channel.js';
