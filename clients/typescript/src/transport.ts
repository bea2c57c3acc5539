/** Channels, call metadata and backoff shared by `Client` and `ResumeFeed`. */

import * as grpc from '@grpc/grpc-js';

/** TLS verified against `rootCerts` (PEM) when given, else plaintext. */
export function channelCredentials(rootCerts: Buffer | undefined): grpc.ChannelCredentials {
  return rootCerts === undefined
    ? grpc.credentials.createInsecure()
    : grpc.credentials.createSsl(rootCerts);
}

/** Fresh call metadata: `authorization: Bearer <token>` when there is a token. */
export function callMetadata(token: string | undefined): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (token) {
    metadata.set('authorization', `Bearer ${token}`);
  }
  return metadata;
}

/**
 * The pause after `failures` consecutive failures (`failures >= 1`): `initialMs *
 * multiplier ** (failures - 1)` capped at `maxMs`, then a random point in its upper half
 * (jitter).
 */
export function backoffDelay(
  initialMs: number,
  maxMs: number,
  failures: number,
  multiplier = 2,
): number {
  const capped = Math.min(maxMs, initialMs * multiplier ** (failures - 1));
  return capped / 2 + Math.random() * (capped / 2);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
