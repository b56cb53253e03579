// Reading what the sidecar publishes: `state.kernel_collab` and each cell's last run.
import { ISharedNotebook } from '@jupyter/ydoc';

/** Who asked for a run, as the sidecar stamps it from the server's identity. */
export interface IPerson {
  username?: string;
  name?: string;
  display_name?: string;
  color?: string;
  initials?: string;
}

/** One entry of the shared execution queue. */
export interface IQueueEntry {
  cell_id: string;
  by: IPerson;
  at: number;
  reason?: string;
  start?: number;
}

/** A cell's last run (`metadata.kernel_collab.last_run`). */
export interface ILastRun {
  by: IPerson;
  start: number;
  end: number | null;
  status: 'running' | 'ok' | 'error' | 'aborted' | 'cancelled' | string;
}

/** What the sidecar says about the room, the kernel and the file. */
export interface IRoomState {
  kernel_status?: string;
  queue?: IQueueEntry[];
  running?: IQueueEntry | null;
  cancelled?: IQueueEntry[];
  autosave?: string;
  file_error?: string | null;
  save_error?: string | null;
  store_error?: string | null;
  merge_conflicts?: string[];
  waiting_for_input?: { cell_id: string; from?: string; username?: string; password?: boolean } | null;
  last_kernel_event?: { event?: string; by?: IPerson | string; at?: number } | null;
  epoch?: string;
  [key: string]: unknown;
}

interface IYMapLike {
  toJSON(): Record<string, unknown>;
}

/** `state.kernel_collab` as JSON (empty before the first sync). */
export function roomState(model: ISharedNotebook): IRoomState {
  const ystate = (model as unknown as { ystate: { get(key: string): unknown } }).ystate;
  const ours = ystate?.get('kernel_collab') as IYMapLike | undefined;
  return ours && typeof ours.toJSON === 'function' ? (ours.toJSON() as IRoomState) : {};
}

/** A person's name as people see it. */
export function personName(person: IPerson | string | undefined | null): string {
  if (!person) {
    return 'someone';
  }
  if (typeof person === 'string') {
    return person;
  }
  return person.display_name || person.name || person.username || 'someone';
}

/** The last run recorded in a cell's metadata, if any. */
export function lastRun(metadata: Record<string, unknown> | undefined): ILastRun | null {
  const ours = metadata?.kernel_collab as { last_run?: ILastRun } | undefined;
  return ours?.last_run ?? null;
}

/** Where a cell stands in the shared queue. */
export interface ICellRunState {
  queued: boolean;
  running: boolean;
  last: ILastRun | null;
  cancelled: IQueueEntry[];
}

/** Where each of some cells stands, reading the room's state and the cells once. */
export function runStates(model: ISharedNotebook, cellIds: Iterable<string>): Map<string, ICellRunState> {
  const wanted = new Set(cellIds);
  const state = roomState(model);
  const queued = new Set((state.queue ?? []).map(e => e.cell_id));
  const metadata = new Map<string, Record<string, unknown>>();
  for (const cell of model.cells) {
    const id = cell.getId();
    if (wanted.has(id)) {
      metadata.set(id, cell.getMetadata() as Record<string, unknown>);
    }
  }
  const out = new Map<string, ICellRunState>();
  for (const id of wanted) {
    out.set(id, {
      queued: queued.has(id),
      running: state.running?.cell_id === id,
      last: lastRun(metadata.get(id)),
      cancelled: (state.cancelled ?? []).filter(e => e.cell_id === id)
    });
  }
  return out;
}

/** Where one cell stands in the shared queue. */
export function cellRunState(model: ISharedNotebook, cellId: string): ICellRunState {
  return runStates(model, [cellId]).get(cellId)!;
}
