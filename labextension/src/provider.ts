// One notebook's connection to its sidecar: y-websocket sync and awareness
// through the server extension's authenticated proxy, plus kernel_collab's
// request messages (type 100).
import { YNotebook } from '@jupyter/ydoc';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection, User } from '@jupyterlab/services';
import { PromiseDelegate } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { WebsocketProvider } from 'y-websocket';
import { holdLocalUpdates } from './hostpatches';
import { IRoom, ensureRoom } from './requests';

/** kernel_collab's request/reply message type on the y-websocket wire. */
export const REQUEST_MESSAGE = 100;
/** Close codes of the sidecar that mean "drop your copy and reopen". */
export const CLOSE_READ_ONLY = 4403;
export const CLOSE_STALE_EPOCH = 4409;

/** The connection state people see in the banner. */
export type ConnectionState =
  'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A prompt from `input()` directed at this person. */
export interface IInputRequest {
  request_id: string;
  cell_id: string;
  prompt: string;
  password: boolean;
}

/** Why a connection ended for good. */
export interface IClosed {
  code: number;
  reason: string;
}

type Reply = { ok: boolean; error?: string; [key: string]: unknown };

/** The collaborative provider of one open notebook. */
export class CollabProvider {
  constructor(
    readonly path: string,
    readonly model: YNotebook,
    private readonly _settings: ServerConnection.ISettings,
    private readonly _user: User.IManager
  ) {}

  /** The room as the server described it when this provider connected. */
  get room(): IRoom | null {
    return this._room;
  }

  /** Whether this person may run cells (the server's authorizer says). */
  get canExecute(): boolean {
    return this._room?.permissions?.execute ?? false;
  }

  /** Whether this person may edit (readers get a read-only notebook). */
  get canWrite(): boolean {
    return this._room?.permissions?.write ?? false;
  }

  /** Resolves once the document is synced with the sidecar for the first
   * time. */
  get ready(): Promise<void> {
    return this._ready.promise;
  }

  get connectionState(): ConnectionState {
    return this._state;
  }

  get stateChanged(): ISignal<this, ConnectionState> {
    return this._stateChanged;
  }

  /** Emitted when the sidecar asks this person to answer `input()`. */
  get inputRequested(): ISignal<this, IInputRequest> {
    return this._inputRequested;
  }

  /** Emitted when the sidecar closed the connection for good (4403, 4409). */
  get closed(): ISignal<this, IClosed> {
    return this._closed;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Ensure the room (unless the server described it already), connect, and
   * resolve `ready` when synced. */
  async connect(room?: IRoom): Promise<void> {
    try {
      this._room = room ?? (await ensureRoom(this._settings, this.path));
    } catch (error) {
      // The document context shows why it could not open.
      this._ready.reject(error);
      throw error;
    }
    if (this._disposed) {
      return;
    }
    const params: Record<string, string> = {};
    if (this._settings.token && this._settings.appendToken) {
      params.token = this._settings.token;
    }
    const url = URLExt.join(this._settings.wsUrl, 'api/kernel-collab/sync');
    const ws = new WebsocketProvider(
      url,
      this._room.document_id,
      this.model.ydoc,
      {
        params,
        awareness: this.model.awareness,
        disableBc: true,
        maxBackoffTime: 2000,
        connect: false
      }
    );
    this._ws = ws;
    if (!this.canWrite) {
      holdLocalUpdates(ws, this.model.ydoc);
    }
    ws.messageHandlers[REQUEST_MESSAGE] = (_encoder, decoder) => {
      this._onRequestMessage(decoding.readVarString(decoder));
    };
    ws.shouldReconnect = event => {
      if (event.code === CLOSE_READ_ONLY || event.code === CLOSE_STALE_EPOCH) {
        this._setState('closed');
        this._closed.emit({ code: event.code, reason: event.reason });
        return false;
      }
      return !this._disposed;
    };
    ws.on('status', ({ status }) => {
      if (status === 'connected') {
        this._setState('connected');
      } else if (status === 'disconnected' && this._state !== 'closed') {
        this._setState(this._synced ? 'reconnecting' : 'connecting');
      }
    });
    ws.on('sync', (synced: boolean) => {
      if (!synced) {
        return;
      }
      // A reconnect must be refused (4409) if the sidecar's document was
      // re-created since.
      const epoch = this._epoch();
      if (epoch) {
        ws.params.epoch = epoch;
      }
      if (!this._synced) {
        this._synced = true;
        this._ready.resolve();
      }
    });
    void this._user.ready.then(() => {
      if (!this._disposed && this._user.identity) {
        this.model.awareness.setLocalStateField('user', this._user.identity);
      }
    });
    ws.connect();
  }

  /** Send a request to the sidecar and resolve with its reply (rejects on
   * `ok: false`). */
  request(body: Record<string, unknown>): Promise<Reply> {
    const ws = this._ws?.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(
        new Error("not connected to the notebook's kernel sidecar")
      );
    }
    const id = `${Date.now().toString(36)}-${++this._nextId}`;
    const reply = new PromiseDelegate<Reply>();
    this._pending.set(id, reply);
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, REQUEST_MESSAGE);
    encoding.writeVarString(encoder, JSON.stringify({ ...body, id }));
    ws.send(encoding.toUint8Array(encoder));
    return reply.promise;
  }

  /** Send a message that has no reply (an answer to `input()`). */
  notify(body: Record<string, unknown>): void {
    const ws = this._ws?.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      throw new Error("not connected to the notebook's kernel sidecar");
    }
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, REQUEST_MESSAGE);
    encoding.writeVarString(encoder, JSON.stringify(body));
    ws.send(encoding.toUint8Array(encoder));
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._ws?.destroy();
    for (const pending of this._pending.values()) {
      pending.reject(new Error('the notebook was closed'));
    }
    this._pending.clear();
    this._ready.reject(new Error('the notebook was closed before it synced'));
    this._ready.promise.catch(() => undefined);
    Signal.clearData(this);
  }

  private _epoch(): string | null {
    const ours = this.model.ystate.get('kernel_collab');
    const epoch =
      ours && typeof ours.get === 'function' ? ours.get('epoch') : null;
    return typeof epoch === 'string' ? epoch : null;
  }

  private _onRequestMessage(text: string): void {
    let message: Reply & { reply_to?: string; type?: string };
    try {
      message = JSON.parse(text);
    } catch (error) {
      console.error(
        'kernel_collab: malformed message from the sidecar',
        text,
        error
      );
      return;
    }
    if (typeof message.reply_to === 'string') {
      const pending = this._pending.get(message.reply_to);
      this._pending.delete(message.reply_to);
      if (!pending) {
        return;
      }
      if (message.ok === false) {
        pending.reject(
          new Error(message.error ?? 'the sidecar refused the request')
        );
      } else {
        pending.resolve(message);
      }
    } else if (message.type === 'input_request') {
      this._inputRequested.emit(message as unknown as IInputRequest);
    }
  }

  private _setState(state: ConnectionState): void {
    if (state !== this._state) {
      this._state = state;
      this._stateChanged.emit(state);
    }
  }

  private _room: IRoom | null = null;
  private _ws: WebsocketProvider | null = null;
  private _ready = new PromiseDelegate<void>();
  private _synced = false;
  private _disposed = false;
  private _nextId = 0;
  private _pending = new Map<string, PromiseDelegate<Reply>>();
  private _state: ConnectionState = 'connecting';
  private _stateChanged = new Signal<this, ConnectionState>(this);
  private _inputRequested = new Signal<this, IInputRequest>(this);
  private _closed = new Signal<this, IClosed>(this);
}
