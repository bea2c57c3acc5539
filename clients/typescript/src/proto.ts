/**
 * The contract at run time: this package's copy of proto/rendezvous/v1/rendezvous.proto
 * (`npm run sync-proto` refreshes it, `npm run check-proto` compares it), loaded with
 * `@grpc/proto-loader`, and the conversion of its decoded messages into the plain objects of
 * `types.ts`.
 */

import * as path from 'node:path';

import * as protoLoader from '@grpc/proto-loader';

import type { IgnoredEvent, Resume, SourceEvent, Wait } from './types';

/** The package's copy of the contract. */
const PROTO_PATH = path.join(
  __dirname,
  '..',
  '..',
  'proto',
  'rendezvous',
  'v1',
  'rendezvous.proto',
);

/**
 * The loaded contract: camelCase fields, enums as their names, 64-bit integers as numbers,
 * unset fields as their defaults (`null` for messages), oneofs named by a virtual field.
 */
export const packageDefinition: protoLoader.PackageDefinition = protoLoader.loadSync(PROTO_PATH, {
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

/** A `google.protobuf.Timestamp` as decoded. */
export interface Timestamp {
  seconds: number;
  nanos: number;
}

/** A public type as the loader decodes it: every `Date` a `Timestamp`. */
export type Wire<T> = T extends Date
  ? Timestamp
  : T extends readonly (infer Item)[]
    ? Wire<Item>[]
    : T extends object
      ? { [K in keyof T]: Wire<T[K]> }
      : T;

/** One method of the contract, with the codec of its messages. */
export interface Rpc<Request, Response> {
  /** `/rendezvous.v1.<Service>/<Method>`. */
  readonly path: string;
  readonly serialize: (request: Request) => Buffer;
  readonly deserialize: (bytes: Buffer) => Response;
}

/** The services of `rendezvous.v1`. */
export type ServiceName = 'WaitService' | 'CallbackService' | 'AdminService';

/** Whether a definition is a service's (messages' and enums' have a `format` string). */
function isService(
  definition: protoLoader.AnyDefinition,
): definition is protoLoader.ServiceDefinition {
  return typeof definition.format !== 'string';
}

/** The definition of a service, for a grpc-js server or client. */
export function serviceDefinition(service: ServiceName): protoLoader.ServiceDefinition {
  const definition = packageDefinition[`rendezvous.v1.${service}`];
  if (definition === undefined || !isService(definition)) {
    throw new Error(`${PROTO_PATH} defines no service rendezvous.v1.${service}`);
  }
  return definition;
}

/**
 * A method of a service; `Request` and `Response` are the shapes the loader encodes and
 * decodes (the caller vouches that they match the contract).
 */
export function rpc<Request, Response>(
  service: ServiceName,
  method: string,
): Rpc<Request, Response> {
  const definition = serviceDefinition(service)[method];
  if (definition === undefined) {
    throw new Error(`${PROTO_PATH} defines no method rendezvous.v1.${service}/${method}`);
  }
  return {
    path: definition.path,
    serialize: definition.requestSerialize as (request: Request) => Buffer,
    deserialize: definition.responseDeserialize as (bytes: Buffer) => Response,
  };
}

/** A timestamp as a `Date` (millisecond precision). */
export function toDate(timestamp: Timestamp | null): Date | null {
  return timestamp === null
    ? null
    : new Date(timestamp.seconds * 1000 + Math.floor(timestamp.nanos / 1_000_000));
}

/** A `Date` as a timestamp. */
export function fromDate(date: Date): Timestamp {
  const millis = date.getTime();
  const seconds = Math.floor(millis / 1000);
  return { seconds, nanos: (millis - seconds * 1000) * 1_000_000 };
}

function toSourceEvent(event: Wire<SourceEvent>): SourceEvent {
  return { ...event, receivedAt: toDate(event.receivedAt) };
}

function toIgnoredEvent(event: Wire<IgnoredEvent>): IgnoredEvent {
  return { ...event, at: toDate(event.at) };
}

/** A decoded `Wait`. */
export function toWait(wait: Wire<Wait>): Wait {
  return {
    ...wait,
    received: wait.received.map(toSourceEvent),
    ignored: wait.ignored.map(toIgnoredEvent),
    createdAt: toDate(wait.createdAt),
    deadline: toDate(wait.deadline),
    decidedAt: toDate(wait.decidedAt),
  };
}

/** A decoded `Resume`. */
export function toResume(resume: Wire<Resume>): Resume {
  return {
    ...resume,
    events: resume.events.map(toSourceEvent),
    registeredAt: toDate(resume.registeredAt),
    decidedAt: toDate(resume.decidedAt),
  };
}
