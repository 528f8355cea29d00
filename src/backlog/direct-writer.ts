import { StorageError } from '../errors.js';
import type { FileHandleIo } from './file-io.js';

/**
 * O_DIRECT needs the memory, the file offset and the length of every transfer aligned to the device's logical
 * block. 4 KiB is a multiple of every common one (512-byte, 512e and 4Kn disks).
 */
export const DIRECT_ALIGN = 4096;
const WASM_PAGE = 64 * 1024;

// Node's type definitions leave WebAssembly out; this is the one constructor used here.
declare const WebAssembly: { Memory: new (desc: { initial: number }) => { readonly buffer: ArrayBuffer } };

const alignDown = (n: number): number => n - (n % DIRECT_ALIGN);
const alignUp = (n: number): number => alignDown(n + DIRECT_ALIGN - 1);

/**
 * No page-aligned memory could be had: V8 reserves gigabytes of address space around every WebAssembly.Memory,
 * which an address-space limit (`ulimit -v`, systemd's LimitAS=) refuses.
 */
export class AlignedMemoryError extends Error {}

/** Whether `err`, from opening or writing with O_DIRECT, means it cannot be used here (rather than a failing disk). */
export function directUnavailable(err: unknown): boolean {
  return err instanceof AlignedMemoryError || (err as NodeJS.ErrnoException | null)?.code === 'EINVAL';
}

/**
 * Page-aligned memory: a WebAssembly.Memory is mmapped, so its first byte starts a page. Node's own Buffers come
 * from malloc and are not aligned (O_DIRECT refuses them with EINVAL).
 */
function alignedBuffer(bytes: number): Buffer {
  let mem: { readonly buffer: ArrayBuffer };
  try {
    mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / WASM_PAGE) });
  } catch (err) {
    throw new AlignedMemoryError(`no page-aligned memory for O_DIRECT writes: ${(err as Error).message}`);
  }
  return Buffer.from(mem.buffer);
}

/**
 * Appends to a file opened with O_DIRECT, so the stream does not pass through the page cache. The disk log's data
 * is written once and read rarely (a replica far behind); through the page cache every byte costs a copy into a
 * newly allocated page, the largest single CPU cost of forwarding on a VM, where a page's first touch traps to the
 * hypervisor.
 *
 * It owns the alignment invariant: every write goes from this writer's aligned buffer, at the aligned offset at or
 * before the file's logical end, and its length is rounded up with zeros. So
 * - the partial block at the logical end is written again, with the same bytes, by the next write. A torn rewrite
 *   (power loss) leaves each sector old or new, and both hold the same bytes there;
 * - after the logical end the file holds zeros (or, after a short write, the stream's own next bytes). A zero byte
 *   never starts a command, so recovery's cut back to the last whole command removes the padding; the disk log
 *   truncates a segment to its logical size when it closes it. Zero-filling matters: stale bytes of this buffer
 *   after the end could parse as commands.
 * The bytes of the partial block are kept between writes (the memory log may drop them once the disk has them),
 * and read back from the file when this writer did not write them itself.
 */
export class DirectWriter {
  readonly #capacity: number;
  #buf: Buffer | null = null;
  /** The buffer a write or read is using now: a hung one keeps it, and the next write takes a new buffer. */
  #busy: Buffer | null = null;
  /** #buf starts with the partial block before #pos of the file behind #fh. */
  #fh: FileHandleIo | null = null;
  #pos = -1;

  /** `capacity`: most stream bytes one write takes. */
  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /**
   * Writes `bufs` at logical position `pos` of the file behind `fh` (opened with O_DIRECT and for reading too).
   * Returns how many of their bytes the file took: fewer than given after a short write, or past the capacity.
   * `copied` is called once `bufs` are copied and no longer read (before the write reaches the device); `taken`, after
   * the write, with a view of the bytes the file took (valid only during the call).
   */
  async write(fh: FileHandleIo, bufs: readonly Buffer[], pos: number, copied?: () => void, taken?: (bytes: Buffer) => void): Promise<{ bytesWritten: number }> {
    if (this.#buf === null || this.#busy === this.#buf) {
      this.#buf = alignedBuffer(this.#capacity + 2 * DIRECT_ALIGN);
      this.#fh = null;
    }
    const buf = this.#buf;
    const base = alignDown(pos);
    const kept = pos - base;
    const own = this.#fh === fh && this.#pos === pos;
    this.#fh = null;
    this.#busy = buf;
    try {
      if (kept > 0 && !own) {
        const { bytesRead } = await fh.read(buf, 0, DIRECT_ALIGN, base);
        if (bytesRead < kept) throw new StorageError(`a log segment is shorter than recorded: ${base + bytesRead} bytes, ${pos} expected`);
      }
      let n = kept;
      for (const b of bufs) {
        const take = Math.min(b.length, this.#capacity + kept - n);
        b.copy(buf, n, 0, take);
        n += take;
        if (take < b.length) break;
      }
      copied?.();
      const len = alignUp(n);
      buf.fill(0, n, len);
      const { bytesWritten } = await fh.writev([buf.subarray(0, len)], base);
      const took = Math.max(0, Math.min(bytesWritten, n) - kept);
      if (took > 0) taken?.(buf.subarray(kept, kept + took));
      const end = pos + took;
      // Keep the new partial block at the front, for the next write.
      buf.copyWithin(0, alignDown(end) - base, end - base);
      if (this.#buf === buf) {
        this.#fh = fh;
        this.#pos = end;
      }
      return { bytesWritten: took };
    } finally {
      if (this.#busy === buf) this.#busy = null;
    }
  }
}
