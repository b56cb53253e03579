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
