// A faulty block device in user space, for kernels without device-mapper (dm-flakey, dm-error, dm-delay): a FUSE
// filesystem (raw /dev/fuse protocol, no library) holding one file, `disk`, whose bytes live in this process's
// memory. A loop device over that file is a real block device: a filesystem on it sends every bio here (the file is
// opened FOPEN_DIRECT_IO, so the FUSE page cache holds nothing), and this process answers each one as the current
// fault table says, as dm-flakey would: EIO on reads and/or writes (fsync included: the loop device's flushes
// arrive as FSYNC), writes acknowledged and dropped, read bytes corrupted, a delay.
//
// Usage: node flakey-disk-daemon.mjs <mountpoint> <size-bytes> [<image to load>]. One JSON line per command on
// stdin, each answered by one line on stdout ("ok ..."); "ready" is printed once the mount is up.
//   {"op":"set","rules":[{"from":0,"to":1e12,"read":"error"|"corrupt","write":"error"|"drop","sync":"error","delayMs":n}]}
//   {"op":"stats"}  -> counts of reads/writes/syncs and of faults served.
// A rule applies to requests overlapping [from, to) (byte offsets of the device); "set" replaces the table.
import { openSync, readSync, writeSync, closeSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const EIO = 5, ENOENT = 2, ENOSYS = 38;
const ROOT = 1n, FILE = 2n;
const S_IFDIR = 0o040000, S_IFREG = 0o100000;

if (isMainThread) {
  const [mountpoint, sizeArg, image] = process.argv.slice(2);
  const size = Number(sizeArg);
  // The disk's bytes and the fault table live in shared memory: a worker thread answers the kernel (blocking reads
  // of /dev/fuse), the main thread takes commands.
  const disk = new SharedArrayBuffer(size);
  if (image) Buffer.from(disk).set(readFileSync(image).subarray(0, size));
  const table = new SharedArrayBuffer(64 * 1024);
  const counts = new SharedArrayBuffer(8 * 8);
  const fd = openSync('/dev/fuse', 'r+');
  // mount(8) must see /dev/fuse as the same descriptor number: pass it through at that number.
  const stdio = ['ignore', 'inherit', 'inherit'];
  while (stdio.length < fd) stdio.push('ignore');
  stdio.push(fd);
  const m = spawnSync('mount', ['-t', 'fuse', '-o', `fd=${fd},rootmode=40000,user_id=0,group_id=0,allow_other`, 'flakey', mountpoint], { stdio });
  if (m.status !== 0) {
    process.stderr.write(`mount failed: ${m.status}\n`);
    process.exit(1);
  }
  const worker = new Worker(new URL(import.meta.url), { workerData: { fd, disk, table, counts, size } });
  worker.on('error', (err) => {
    process.stderr.write(`fuse worker: ${err.stack}\n`);
    process.exit(1);
  });
  const tableText = (rules) => {
    const b = Buffer.from(table);
    const json = Buffer.from(JSON.stringify(rules));
    b.fill(0, 8);
    json.copy(b, 8);
    const seq = new Int32Array(table, 0, 2);
    Atomics.store(seq, 1, json.length);
    Atomics.add(seq, 0, 1);
  };
  tableText([]);
  const c = new Float64Array(counts);
  process.stdout.write('ready\n');
  createInterface({ input: process.stdin }).on('line', (line) => {
    const cmd = JSON.parse(line);
    if (cmd.op === 'set') {
      tableText(cmd.rules);
      process.stdout.write('ok set\n');
    } else if (cmd.op === 'stats') {
      process.stdout.write(`ok ${JSON.stringify({ reads: c[0], writes: c[1], syncs: c[2], readErrors: c[3], writeErrors: c[4], dropped: c[5], corrupted: c[6], syncErrors: c[7] })}\n`);
    } else process.stdout.write(`ok unknown\n`);
  }).on('close', () => process.exit(0));
} else {
  const { fd, disk, table, counts, size } = workerData;
  const mem = Buffer.from(disk);
  const c = new Float64Array(counts);
  const seq = new Int32Array(table, 0, 2);
  let seen = -1;
  let rules = [];
  const currentRules = () => {
    const s = Atomics.load(seq, 0);
    if (s !== seen) {
      seen = s;
      const n = Atomics.load(seq, 1);
      rules = JSON.parse(Buffer.from(table).toString('utf8', 8, 8 + n));
    }
    return rules;
  };
  const match = (from, len, kind) => {
    for (const r of currentRules()) {
      if (r[kind] && from < r.to && from + len > r.from) return r;
    }
    return null;
  };
  const delayOf = (from, len) => {
    for (const r of currentRules()) if (r.delayMs && from < r.to && from + len > r.from) return r.delayMs;
    return 0;
  };
  const sleep = new Int32Array(new SharedArrayBuffer(4));
  const attr = (b, o, ino) => {
    b.writeBigUInt64LE(ino, o);
    b.writeBigUInt64LE(ino === FILE ? BigInt(size) : 0n, o + 8);
    b.writeBigUInt64LE(ino === FILE ? BigInt(Math.ceil(size / 512)) : 0n, o + 16);
    b.writeUInt32LE(ino === FILE ? S_IFREG | 0o600 : S_IFDIR | 0o755, o + 60);
    b.writeUInt32LE(ino === FILE ? 1 : 2, o + 64);
    b.writeUInt32LE(4096, o + 80);
  };
  const reply = (unique, error, body) => {
    const h = Buffer.alloc(16);
    const len = 16 + (body ? body.length : 0);
    h.writeUInt32LE(len, 0);
    h.writeInt32LE(-error, 4);
    h.writeBigUInt64LE(unique, 8);
    try {
      writeSync(fd, body ? Buffer.concat([h, body]) : h);
    } catch {
      // the request was interrupted, or the connection aborted
    }
  };
  const buf = Buffer.alloc(1024 * 1024 + 4096);
  for (;;) {
    let n;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (err) {
      if (err.code === 'EINTR' || err.code === 'EAGAIN' || err.code === 'ENOENT') continue;
      process.exit(0); // ENODEV: unmounted
    }
    if (n < 40) continue;
    const opcode = buf.readUInt32LE(4);
    const unique = buf.readBigUInt64LE(8);
    const nodeid = buf.readBigUInt64LE(16);
    const arg = buf.subarray(40, n);
    switch (opcode) {
      case 26: { // INIT
        const out = Buffer.alloc(64);
        out.writeUInt32LE(7, 0);
        out.writeUInt32LE(31, 4);
        out.writeUInt32LE(arg.readUInt32LE(8), 8); // max_readahead
        out.writeUInt32LE((1 << 5) | (1 << 22), 12); // BIG_WRITES, MAX_PAGES
        out.writeUInt16LE(16, 16);
        out.writeUInt16LE(12, 18);
        out.writeUInt32LE(1024 * 1024, 20); // max_write
        out.writeUInt32LE(1, 24);
        out.writeUInt16LE(256, 28); // max_pages
        reply(unique, 0, out);
        break;
      }
      case 1: { // LOOKUP
        const name = arg.toString('utf8', 0, arg.indexOf(0));
        if (nodeid !== ROOT || name !== 'disk') { reply(unique, ENOENT); break; }
        const out = Buffer.alloc(128);
        out.writeBigUInt64LE(FILE, 0);
        out.writeBigUInt64LE(3600n, 16);
        out.writeBigUInt64LE(3600n, 24);
        attr(out, 40, FILE);
        reply(unique, 0, out);
        break;
      }
      case 3: // GETATTR
      case 4: { // SETATTR (size changes are ignored: the disk has one size)
        const out = Buffer.alloc(104);
        out.writeBigUInt64LE(3600n, 0);
        attr(out, 16, nodeid);
        reply(unique, 0, out);
        break;
      }
      case 14: // OPEN
      case 27: { // OPENDIR
        const out = Buffer.alloc(16);
        out.writeUInt32LE(opcode === 14 ? 1 : 0, 8); // FOPEN_DIRECT_IO
        reply(unique, 0, out);
        break;
      }
      case 15: { // READ
        const off = Number(arg.readBigUInt64LE(8));
        const len = Math.min(arg.readUInt32LE(16), Math.max(0, size - off));
        c[0]++;
        const d = delayOf(off, len);
        if (d) Atomics.wait(sleep, 0, 0, d);
        const r = match(off, len, 'read');
        if (r && r.read === 'error') { c[3]++; reply(unique, EIO); break; }
        const out = Buffer.from(mem.subarray(off, off + len));
        if (r && r.read === 'corrupt') {
          c[6]++;
          // one byte per 512-byte sector in the range, as corrupt_bio_byte does per bio
          for (let p = Math.max(r.from, off); p < Math.min(r.to, off + len); p += 512) out[p - off] ^= 0xff;
        }
        reply(unique, 0, out);
        break;
      }
      case 16: { // WRITE
        const off = Number(arg.readBigUInt64LE(8));
        const len = arg.readUInt32LE(16);
        c[1]++;
        const d = delayOf(off, len);
        if (d) Atomics.wait(sleep, 0, 0, d);
        const r = match(off, len, 'write');
        if (r && r.write === 'error') { c[4]++; reply(unique, EIO); break; }
        if (r && r.write === 'drop') c[5]++;
        else mem.set(arg.subarray(40, 40 + Math.min(len, size - off)), off);
        const out = Buffer.alloc(8);
        out.writeUInt32LE(len, 0);
        reply(unique, 0, out);
        break;
      }
      case 20: // FSYNC
      case 30: { // FSYNCDIR
        c[2]++;
        const r = match(0, Number.MAX_SAFE_INTEGER, 'sync');
        if (r) { c[7]++; reply(unique, EIO); break; }
        reply(unique, 0);
        break;
      }
      case 17: { // STATFS
        const out = Buffer.alloc(80);
        out.writeUInt32LE(4096, 40);
        out.writeUInt32LE(255, 44);
        out.writeUInt32LE(4096, 48);
        reply(unique, 0, out);
        break;
      }
      case 2: // FORGET
      case 42: // BATCH_FORGET
      case 36: // INTERRUPT
        break;
      case 18: // RELEASE
      case 29: // RELEASEDIR
      case 25: // FLUSH
      case 34: // ACCESS
        reply(unique, 0);
        break;
      case 38: // DESTROY
        reply(unique, 0);
        closeSync(fd);
        process.exit(0);
        break;
      default:
        reply(unique, ENOSYS);
    }
  }
}
