import type { PitrTarget } from './planner.js';

/** A snapshot a point in time can start from. */
export interface HistorySnapshot {
  readonly replid: string;
  readonly offset: number;
  /** When the relay took it (ISO 8601). */
  readonly time: string;
  readonly bytes: number;
}

/** What `RELAY HISTORY` and `GET /history` report: the window a point in time can be chosen in. */
export interface HistoryView {
  readonly replid: string;
  /** Oldest and newest offsets a point-in-time replica can be served at (-1/-1: none). */
  readonly firstOffset: number;
  readonly lastOffset: number;
  /** When the relay received those offsets (ISO 8601; null: unknown). */
  readonly firstTime: string | null;
  readonly lastTime: string | null;
  /** Held snapshots a point in time can start from, oldest first. */
  readonly snapshots: readonly HistorySnapshot[];
  /** Point-in-time listeners open now. */
  readonly listeners: readonly PitrAnswer[];
}

/** A point-in-time listener: a replica pointed at `port` gets the dataset as it was at `offset`. */
export interface PitrAnswer {
  readonly port: number;
  readonly offset: number;
  /** When the relay received the stream up to `offset` (ISO 8601; null: unknown). */
  readonly time: string | null;
  /** The replid the replica is told (the master's, at that offset). */
  readonly replid: string;
  /** The snapshot it starts from. */
  readonly snapshotOffset: number;
}

/** Point-in-time requests (RELAY PITR / RELAY HISTORY, GET /history, POST /pitr). Errors are PitrError (code RELAY_ERR_PITR). */
export interface PitrApi {
  history(): HistoryView;
  open(target: PitrTarget): Promise<PitrAnswer>;
  /** Closes the listener on `port` and its replicas' connections; false when there is none. */
  close(port: number): boolean;
}
