// Reading what the sidecar publishes: `state.kernel_collab` and each cell's
// last run.
import { ISharedCell, ISharedNotebook } from '@jupyter/ydoc';

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
  /** The record came with an outside change to the file: not a run in this room. */
  from_file?: boolean;
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
  waiting_for_input?: {
    cell_id: string;
    from?: string;
    username?: string;
    password?: boolean;
  } | null;
  last_kernel_event?: {
    event?: string;
    by?: IPerson | string;
    at?: number;
    /** Why the kernel did not start (event `failed`). */
    error?: string;
  } | null;
  epoch?: string;
  [key: string]: unknown;
}

interface IYMapLike {
  toJSON(): Record<string, unknown>;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isEntry(value: unknown): value is IQueueEntry {
  return isObject(value) && typeof value.cell_id === 'string';
}

/** `state.kernel_collab` as JSON (empty before the first sync). Any peer can
 * write the shared state, so the lists and entries read everywhere have the
 * shape they are read with. */
export function roomState(model: ISharedNotebook): IRoomState {
  const ystate = (model as unknown as { ystate: { get(key: string): unknown } })
    .ystate;
  const ours = ystate?.get('kernel_collab') as IYMapLike | undefined;
  const raw = ours && typeof ours.toJSON === 'function' ? ours.toJSON() : null;
  if (!isObject(raw)) {
    return {};
  }
  const state = { ...raw } as IRoomState;
  for (const key of ['queue', 'cancelled'] as const) {
    if (state[key] !== undefined) {
      state[key] = Array.isArray(state[key]) ? state[key]!.filter(isEntry) : [];
    }
  }
  if (
    state.running !== undefined &&
    state.running !== null &&
    !isEntry(state.running)
  ) {
    state.running = null;
  }
  if (
    state.merge_conflicts !== undefined &&
    !Array.isArray(state.merge_conflicts)
  ) {
    state.merge_conflicts = [];
  }
  if (
    state.waiting_for_input !== undefined &&
    !isObject(state.waiting_for_input)
  ) {
    state.waiting_for_input = null;
  }
  if (
    state.last_kernel_event !== undefined &&
    !isObject(state.last_kernel_event)
  ) {
    state.last_kernel_event = null;
  }
  return state;
}

/** A string from shared data (awareness, the document, the room's state), else
 * ''. Peers can put any JSON there: only strings and numbers are shown. */
export function text(value: unknown): string {
  if (typeof value === 'string') {
    return value;
  }
  return typeof value === 'number' && isFinite(value) ? String(value) : '';
}

/** A person's name as people see it (`fallback` when there is none). */
export function personName(
  person: IPerson | string | undefined | null,
  fallback = 'someone'
): string {
  if (typeof person === 'string') {
    return person || fallback;
  }
  if (!isObject(person)) {
    return fallback;
  }
  return (
    text(person.display_name) ||
    text(person.name) ||
    text(person.username) ||
    fallback
  );
}

/** The colour shown for people whose colour is missing or not one we accept. */
export const NEUTRAL_COLOR = '#888888';

const COLOR = new RegExp(
  '^(?:#(?:[0-9a-f]{3}|[0-9a-f]{6}|[0-9a-f]{8})' +
    '|(?:rgb|hsl)a?\\([0-9.,%/ ]*[0-9][0-9.,%/ ]*\\)' +
    '|var\\(--jp-collaborator-color[1-7]\\))$',
  'i'
);

/** A colour from awareness or the document, for a style: `#rgb`, `#rrggbb`,
 * `#rrggbbaa`, or `rgb(…)`/`hsl(…)` of digits, JupyterLab's
 * `var(--jp-collaborator-colorN)`; anything else (a `;`, `url(…)`, a word) is
 * the neutral colour. */
export function safeColor(value: unknown): string {
  return typeof value === 'string' && value.length <= 64 && COLOR.test(value)
    ? value
    : NEUTRAL_COLOR;
}

/** The last run recorded in a cell's metadata, if any. */
export function lastRun(
  metadata: Record<string, unknown> | undefined
): ILastRun | null {
  const ours = metadata?.kernel_collab;
  const last = isObject(ours) ? ours.last_run : undefined;
  return isObject(last) ? (last as unknown as ILastRun) : null;
}

/** A Yjs shared type (a map has `get`), as read here. */
interface IYTypeLike {
  toJSON(): unknown;
  get?(key: string): unknown;
}

function isYType(value: unknown): value is IYTypeLike {
  return isObject(value) && typeof value.toJSON === 'function';
}

/** A cell's last run, reading its `metadata.kernel_collab` only (not a copy of
 * all its metadata). Not with `getMetadata('kernel_collab')`: that deep-copies
 * the value as it is stored, and a shared type there (which any peer can put)
 * overflows the stack. */
export function cellLastRun(cell: ISharedCell): ILastRun | null {
  const ymodel = (cell as unknown as { ymodel?: IYTypeLike }).ymodel;
  const ymetadata = ymodel?.get?.('metadata');
  if (!isYType(ymetadata) || typeof ymetadata.get !== 'function') {
    return lastRun(cell.getMetadata() as Record<string, unknown>);
  }
  const ours = ymetadata.get('kernel_collab');
  return lastRun({ kernel_collab: isYType(ours) ? ours.toJSON() : ours });
}

/** Where a cell stands in the shared queue. */
export interface ICellRunState {
  queued: boolean;
  running: boolean;
  last: ILastRun | null;
  cancelled: IQueueEntry[];
}

/** Where each of some cells stands, reading the room's state and the cells
 * once. */
export function runStates(
  model: ISharedNotebook,
  cellIds: Iterable<string>
): Map<string, ICellRunState> {
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
export function cellRunState(
  model: ISharedNotebook,
  cellId: string
): ICellRunState {
  return runStates(model, [cellId]).get(cellId)!;
}
