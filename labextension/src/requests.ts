// The server extension's REST routes, called with JupyterLab's own
// authenticated settings.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Whether a notebook opens collaboratively, and why
 * (`GET /api/kernel-collab/mode/{path}`). */
export interface IMode {
  collaborative: boolean;
  reason: 'room' | 'session' | 'server-wide' | 'kernelspec';
  kernel_name?: string | null;
  /** The room, when it is open already (no PUT needed to join it). */
  room?: IRoom;
}

/** A notebook's room (`PUT /api/kernel-collab/rooms/{path}`). */
export interface IRoom {
  document_id: string;
  path: string;
  kernel_id: string | null;
  session_id: string | null;
  epoch: string | null;
  permissions?: { write: boolean; execute: boolean };
}

/** An error answer of the server extension, with its status and message. */
export class RouteError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

async function call<T>(
  settings: ServerConnection.ISettings,
  route: string,
  init: RequestInit
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'api/kernel-collab', route);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try {
      message = JSON.parse(text).message ?? text;
    } catch {
      // not JSON: keep the body as it is
    }
    throw new RouteError(
      response.status,
      `${route}: ${response.status} ${message}`
    );
  }
  return JSON.parse(text) as T;
}

function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** Ask the server whether `path` opens collaboratively. */
export function fetchMode(
  settings: ServerConnection.ISettings,
  path: string
): Promise<IMode> {
  return call<IMode>(settings, `mode/${encodePath(path)}`, { method: 'GET' });
}

/** Ensure the notebook's room, starting its collaborative session if none
 * runs. */
export function ensureRoom(
  settings: ServerConnection.ISettings,
  path: string
): Promise<IRoom> {
  return call<IRoom>(settings, `rooms/${encodePath(path)}`, { method: 'PUT' });
}

/** Interrupt or restart the notebook's kernel, recorded with who did it. */
export function kernelAction(
  settings: ServerConnection.ISettings,
  path: string,
  action: 'interrupt' | 'restart'
): Promise<unknown> {
  return call<unknown>(settings, `rooms/${encodePath(path)}/${action}`, {
    method: 'POST'
  });
}

/** Who made a version: a person, a script, the kernel's own code, the file on
 * disk (an outside edit) or the sidecar. Names come from peers: text only. */
export interface IAuthor {
  kind: 'person' | 'script' | 'kernel' | 'disk' | 'sidecar' | string;
  name: string;
  username?: string;
}

/** One stored version of a notebook
 * (`GET /api/kernel-collab/rooms/{path}/history`). */
export interface IVersion {
  version: number;
  /** When its first and last change were made (Unix seconds). */
  first_at: number;
  at: number;
  kind:
    | 'created'
    | 'edit'
    | 'save'
    | 'restart'
    | 'restore'
    | 'outside'
    | 'purge'
    | string;
  pinned: boolean;
  authors: IAuthor[];
  label: string;
  outputs_dropped: boolean;
}

/** A notebook's cell as nbformat 4 stores it (what the history shows). */
export interface IStoredCell {
  id?: string;
  cell_type: string;
  source: string | string[];
  outputs?: IStoredOutput[];
  execution_count?: number | null;
}

/** A code cell's output as nbformat 4 stores it. */
export interface IStoredOutput {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
  ename?: string;
  evalue?: string;
  traceback?: string[];
}

/** One version's notebook
 * (`GET /api/kernel-collab/rooms/{path}/history/{N}`). */
export interface IVersionContent {
  version: number;
  notebook: { cells?: IStoredCell[]; [key: string]: unknown };
  /** Ids of the cells whose outputs were trusted in that version. */
  trusted: string[];
  outputs_dropped: boolean;
}

/** What happened to one cell between two versions. */
export interface ICellChange {
  id: string | null;
  status: 'added' | 'removed' | 'moved' | 'modified' | 'unchanged';
  source_changed: boolean;
  outputs_changed: boolean;
  old_index: number | null;
  new_index: number | null;
  /** A unified diff of the cell's source (when it changed). */
  source_diff?: string;
}

/** The changes from one version to another or to now
 * (`GET /api/kernel-collab/rooms/{path}/history/{N}/diff`). */
export interface IHistoryDiff {
  version: number;
  against: number;
  outputs_dropped: boolean;
  cells: ICellChange[];
}

function historyRoute(path: string, ...parts: string[]): string {
  return ['rooms', encodePath(path), 'history', ...parts].join('/');
}

/** The notebook's stored versions, oldest first. */
export async function fetchHistory(
  settings: ServerConnection.ISettings,
  path: string
): Promise<IVersion[]> {
  const reply = await call<{ versions?: IVersion[] }>(
    settings,
    historyRoute(path),
    { method: 'GET' }
  );
  return Array.isArray(reply.versions) ? reply.versions : [];
}

/** One stored version of the notebook. */
export function fetchVersion(
  settings: ServerConnection.ISettings,
  path: string,
  version: number
): Promise<IVersionContent> {
  return call<IVersionContent>(settings, historyRoute(path, String(version)), {
    method: 'GET'
  });
}

/** What changed, cell by cell, from `version` to now (or to `against`). */
export function fetchDiff(
  settings: ServerConnection.ISettings,
  path: string,
  version: number,
  against: number | 'current' = 'current'
): Promise<IHistoryDiff> {
  const query = `?against=${encodeURIComponent(String(against))}`;
  return call<IHistoryDiff>(
    settings,
    historyRoute(path, String(version), 'diff') + query,
    { method: 'GET' }
  );
}

/** Make `version` the notebook again, for everyone (a new version). */
export function restoreVersion(
  settings: ServerConnection.ISettings,
  path: string,
  version: number
): Promise<{ version: number }> {
  return call<{ version: number }>(
    settings,
    historyRoute(path, String(version), 'restore'),
    { method: 'POST' }
  );
}
