/**
 * A full sync's RDB while it arrives from upstream, for replicas that take it before it is whole (a pipelined cold
 * start). The upstream link produces it, the master side consumes it: this leaf module is where both meet. Its bytes
 * are unchecked until the end: a transfer that fails ends the replicas' transfers too.
 */
export interface RdbTransfer {
  readonly replid: string;
  readonly offset: number;
  readonly path: string;
  /** The payload size: announced by upstream ($<len>), or for an EOF-marked transfer known once it ended; else null. */
  total(): number | null;
  /** Payload bytes in the file so far. */
  flushed(): number;
  /** receiving; complete (every payload byte is in the file; checked and committed later: see outcome); failed. */
  progress(): 'receiving' | 'complete' | 'failed';
  /** Resolves once more than `bytes` are in the file, or the transfer ended. */
  waitBeyond(bytes: number): Promise<void>;
  /** Reads the file while it arrives (also after it was committed under another name); close() when done. */
  openReader(): { read(position: number, length: number): Promise<Buffer>; close(): void };
  /** true once the RDB is checked and committed as the new history; false when the transfer failed. */
  readonly outcome: Promise<boolean>;
}
