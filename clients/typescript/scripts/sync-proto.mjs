#!/usr/bin/env node
// Copies the service contract, proto/rendezvous/v1/rendezvous.proto at the repository root,
// into this package (proto/rendezvous/v1/rendezvous.proto), which loads it at run time.
//
//   node scripts/sync-proto.mjs           (npm run sync-proto) write the copy
//   node scripts/sync-proto.mjs --check   (npm run check-proto) exit 1 when the copy differs

import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const PROTO = join('proto', 'rendezvous', 'v1', 'rendezvous.proto');
const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(packageDir, '..', '..', PROTO);
const copy = join(packageDir, PROTO);

const check = process.argv.includes('--check');
if (process.argv.length > 3 || (process.argv.length === 3 && !check)) {
  console.error('usage: node scripts/sync-proto.mjs [--check]');
  process.exit(2);
}

if (check) {
  const same = existsSync(copy) && readFileSync(copy).equals(readFileSync(source));
  if (!same) {
    console.error(
      `${relative(process.cwd(), copy)} differs from ${relative(process.cwd(), source)}: ` +
        'run `npm run sync-proto` and review the client against the new contract',
    );
    process.exit(1);
  }
  console.log(`${relative(process.cwd(), copy)} is up to date`);
} else {
  mkdirSync(dirname(copy), { recursive: true });
  copyFileSync(source, copy);
  console.log(`copied ${relative(process.cwd(), source)} to ${relative(process.cwd(), copy)}`);
}
