// Who is in a collaborative notebook and what they are doing, read from the
// shared awareness and document: people (browsers) and agents (scripts through
// kernel_collab.client, the kernel's own API), the cell each is on, the edits
// and runs agents make, and where an agent last typed.
//
// Everything here is data any peer can write, except `user`, which the sidecar
// stamps from the server's identity (its name, colour, avatar and role): who
// someone is comes only from `user`; an agent's own name (`kernel_collab.
// client_name`) is shown as the name it connected with, next to the identity
// it connected as.
import { ISignal, Signal } from '@lumino/signaling';
import * as Y from 'yjs';
import { CollabProvider } from './provider';
import {
  IPerson,
  IQueueEntry,
  personName,
  roomState,
  safeColor,
  text
} from './state';

/** A person in a browser, a script or agent (`kernel_collab.client`), or the
 * kernel's own API. */
export type CollaboratorKind = 'person' | 'script' | 'kernel';

/** What a person or agent may do, as the sidecar stamps it. */
export type Role = 'run' | 'edit' | 'read' | '';

/** One collaborator as shown: a person (all their tabs) or one agent
 * connection. Every string is from shared data, to be shown as text. */
export interface ICollaborator {
  /** `user:<username>` for a person, `client:<awareness id>` for an agent. */
  key: string;
  kind: CollaboratorKind;
  /** Their name: a person's display name, an agent's connect name. */
  name: string;
  /** An agent's identity as the server knows it ('' for anonymous peers: the
   * kernel, local scripts with the kernel's token). */
  owner: string;
  role: Role;
  /** A colour checked by `safeColor`. */
  color: string;
  /** At most two characters, for the avatar. */
  initials: string;
  /** An http(s) URL, or null. */
  avatar: string | null;
  /** The cell they are on, if known. */
  cellId: string | null;
  /** The awareness client whose caret is theirs in that cell, if any. */
  caretClient: number | null;
  /** This page. */
  self: boolean;
}

/** Something an agent did to a cell: `edited` (typed, inserted, changed
 * metadata), `ran` (asked for a run), or `touched` (its awareness says it is
 * at the cell again, what it did not known yet). */
export interface IActivity {
  collaborator: ICollaborator;
  cellId: string;
  verb: 'edited' | 'ran' | 'touched';
}

/** Where an agent last typed: after its last insert in a cell's source. */
export interface IAgentCaret {
  clientId: number;
  name: string;
  color: string;
  index: number;
}

interface IAwarenessLike {
  clientID: number;
  getStates(): Map<number, Record<string, any>>;
  meta: Map<number, { clock: number; lastUpdated: number }>;
  getLocalState(): Record<string, any> | null;
  setLocalStateField(field: string, value: unknown): void;
  on(event: string, handler: (...args: any[]) => void): void;
  off(event: string, handler: (...args: any[]) => void): void;
}

/** How long an agent's touch of a cell counts as the reason of a run of that
 * cell that appears after it (ms). */
const TOUCH_EXPLAINS_RUN_MS = 5000;

function isObject(value: unknown): value is Record<string, any> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An avatar URL we load: http(s) only (the sidecar keeps http(s) and
 * same-site paths; a path is resolved against this page). */
export function safeAvatar(value: unknown): string | null {
  if (typeof value !== 'string' || !value || value.length > 2048) {
    return null;
  }
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === 'https:' || url.protocol === 'http:'
      ? url.href
      : null;
  } catch {
    return null;
  }
}

/** The first two characters (code points) of someone's initials, or of their
 * name. */
function initialsOf(user: IPerson, name: string): string {
  const given = text(user.initials).trim() || name.trim();
  return Array.from(given).slice(0, 2).join('').toUpperCase() || '?';
}

function roleOf(user: Record<string, unknown>): Role {
  const role = text(user.role);
  return role === 'run' || role === 'edit' || role === 'read' ? role : '';
}

/** The cell a state's primary caret is in (Yjs relative positions), if any. */
function caretCell(state: Record<string, any>, doc: Y.Doc): string | null {
  const cursors = state.cursors;
  if (!Array.isArray(cursors) || !cursors.length) {
    return null;
  }
  const primary =
    cursors.find(c => isObject(c) && c.primary === true) ?? cursors[0];
  if (!isObject(primary)) {
    return null;
  }
  try {
    const position = Y.createAbsolutePositionFromRelativePosition(
      Y.createRelativePositionFromJSON(primary.head),
      doc
    );
    const parent = position?.type.parent;
    const id = parent instanceof Y.Map ? parent.get('id') : null;
    return typeof id === 'string' ? id : null;
  } catch {
    return null;
  }
}

/** Whether an awareness state is an agent's (a script or the kernel): it says
 * so (`kernel_collab.client_name`), or it is an anonymous peer (no username:
 * only holders of the kernel's own token connect without one). */
function isAgent(state: Record<string, any>): boolean {
  const ours = state.kernel_collab;
  return (
    (isObject(ours) && typeof ours.client_name === 'string') ||
    !text(state.user?.username)
  );
}

/** The presence of one collaborative notebook; one per shared document. */
export class Presence {
  constructor(readonly provider: CollabProvider) {
    const model = provider.model;
    this._doc = model.ydoc;
    this._awareness = model.awareness as unknown as IAwarenessLike;
    this._cells = this._doc.getArray('cells');
    this._state = this._doc.getMap('state');
    this._awareness.on('change', this._onAwarenessChange);
    this._cells.observeDeep(this._onCellsChange);
    this._doc.on('afterTransaction', this._onTransaction);
    this._doc.on('destroy', this.dispose);
    REGISTRY.set(this._doc, this);
    this._newRuns(); // what is queued already was asked before
    this._knownRunStarts(); // and what ran
    this._update();
  }

  /** The presence of a shared document, if it is a collaborative notebook's. */
  static of(doc: Y.Doc | null | undefined): Presence | undefined {
    return doc ? REGISTRY.get(doc) : undefined;
  }

  /** Everyone in the notebook: this page's person first, then people by name,
   * then agents. */
  get collaborators(): ICollaborator[] {
    return this._collaborators;
  }

  /** Emitted when someone comes, goes, moves to another cell or changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted when an agent edits, runs or touches a cell. */
  get activity(): ISignal<this, IActivity> {
    return this._activity;
  }

  /** Emitted when agents' carets move, come or go, with the cells' source
   * texts they left or came to (where they are to be drawn again). */
  get caretsChanged(): ISignal<this, ReadonlySet<Y.Text>> {
    return this._caretsChanged;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Find a collaborator by key. */
  find(key: string): ICollaborator | undefined {
    return this._collaborators.find(c => c.key === key);
  }

  /** Agents' carets in a cell's source text (not those who share their own
   * carets in awareness). */
  caretsIn(source: Y.Text): IAgentCaret[] {
    const out: IAgentCaret[] = [];
    const states = this._awareness.getStates();
    for (const [clientId, caret] of this._carets) {
      const state = states.get(clientId);
      if (!state || Array.isArray(state.cursors)) {
        continue;
      }
      const position = this._resolve(caret.position);
      if (!position || position.type !== source) {
        continue;
      }
      const who = this._describe(clientId, state);
      out.push({
        clientId,
        name: who.name,
        color: who.color,
        index: position.index
      });
    }
    return out;
  }

  /** The source text an agent's caret is in, if it has one. */
  caretSource(clientId: number): Y.Text | null {
    const caret = this._carets.get(clientId);
    const type = caret ? this._resolve(caret.position)?.type : null;
    return type instanceof Y.Text ? type : null;
  }

  /** Tell the others which cell this page's person is on. */
  setActiveCell(cellId: string | null): void {
    if (this._disposed) {
      return;
    }
    const ours = this._awareness.getLocalState()?.kernel_collab;
    if (isObject(ours) && ours.active_cell === cellId) {
      return;
    }
    this._awareness.setLocalStateField('kernel_collab', {
      ...(isObject(ours) ? ours : {}),
      active_cell: cellId
    });
  }

  dispose = (): void => {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._awareness.off('change', this._onAwarenessChange);
    this._cells.unobserveDeep(this._onCellsChange);
    this._doc.off('afterTransaction', this._onTransaction);
    this._doc.off('destroy', this.dispose);
    REGISTRY.delete(this._doc);
    Signal.clearData(this);
  };

  /** A collaborator from one awareness state (a person's first tab, or an
   * agent). */
  private _describe(
    clientId: number,
    state: Record<string, any>
  ): ICollaborator {
    const user: IPerson & Record<string, unknown> = isObject(state.user)
      ? state.user
      : {};
    const ours = isObject(state.kernel_collab) ? state.kernel_collab : {};
    const identity = personName(user, 'Anonymous');
    if (isAgent(state)) {
      const connectName = text(ours.client_name).trim().slice(0, 64);
      const username = text(user.username);
      const kernel = !username && (connectName || identity) === 'kernel';
      const name = connectName || identity;
      return {
        key: `client:${clientId}`,
        kind: kernel ? 'kernel' : 'script',
        name,
        owner: username ? identity : '',
        role: roleOf(user),
        color: safeColor(user.color),
        initials: initialsOf({}, name),
        avatar: null,
        cellId: text(ours.cell_id) || null,
        caretClient: this._carets.has(clientId) ? clientId : null,
        self: clientId === this._awareness.clientID
      };
    }
    const cellId =
      text(ours.active_cell) || caretCell(state, this._doc) || null;
    const self = clientId === this._awareness.clientID;
    return {
      key: `user:${text(user.username)}`,
      kind: 'person',
      name: identity,
      owner: '',
      // The sidecar stamps others' roles; this page's is what it was granted.
      role: self ? this._ownRole() : roleOf(user),
      color: safeColor(user.color),
      initials: initialsOf(user, identity),
      avatar: safeAvatar(user.avatar_url),
      cellId,
      caretClient:
        cellId && caretCell(state, this._doc) === cellId ? clientId : null,
      self
    };
  }

  private _ownRole(): Role {
    const provider = this.provider;
    return provider.canExecute ? 'run' : provider.canWrite ? 'edit' : 'read';
  }

  /** Re-read the awareness: who is here and where. */
  private _update(): void {
    const states = this._awareness.getStates();
    const meta = this._awareness.meta;
    const people = new Map<string, { at: number; who: ICollaborator }>();
    const agents: ICollaborator[] = [];
    const ownId = this._awareness.clientID;
    states.forEach((state, clientId) => {
      if (!isObject(state) || !isObject(state.user)) {
        return;
      }
      const who = this._describe(clientId, state);
      if (who.kind !== 'person') {
        agents.push(who);
        return;
      }
      // A person with several tabs is one collaborator: this page wins, then
      // the tab heard of last.
      const at =
        clientId === ownId ? Infinity : meta.get(clientId)?.lastUpdated;
      const known = people.get(who.key);
      if (!known || (at ?? 0) > known.at || (!known.who.cellId && who.cellId)) {
        people.set(who.key, {
          at: at ?? 0,
          who: known?.who.self ? { ...who, self: true } : who
        });
      } else if (who.self) {
        known.who.self = true;
      }
    });
    const byName = (a: ICollaborator, b: ICollaborator): number =>
      a.name.localeCompare(b.name);
    const list = [...people.values()].map(p => p.who).sort(byName);
    const selfIndex = list.findIndex(c => c.self);
    if (selfIndex > 0) {
      list.unshift(...list.splice(selfIndex, 1));
    }
    const next = [...list, ...agents.sort(byName)];
    const same =
      next.length === this._collaborators.length &&
      next.every(
        (c, i) => JSON.stringify(c) === JSON.stringify(this._collaborators[i])
      );
    this._collaborators = next;
    if (!same) {
      this._changed.emit();
    }
  }

  private _onAwarenessChange = (change: {
    added: number[];
    updated: number[];
    removed: number[];
  }): void => {
    const states = this._awareness.getStates();
    const left = new Set<Y.Text>();
    let caretsLeft = false;
    for (const clientId of change.removed) {
      this._touches.delete(clientId);
      caretsLeft = this._forgetCaret(clientId, left) || caretsLeft;
    }
    if (caretsLeft) {
      this._caretsChanged.emit(left);
    }
    // An agent that touched a cell (a new `seq`, or another cell): it is at
    // work there.
    for (const clientId of [...change.added, ...change.updated]) {
      const state = states.get(clientId);
      if (!state || clientId === this._awareness.clientID || !isAgent(state)) {
        continue;
      }
      const ours = isObject(state.kernel_collab) ? state.kernel_collab : {};
      const cellId = text(ours.cell_id);
      if (!cellId) {
        continue;
      }
      const touch = `${cellId}\u0000${text(ours.seq)}`;
      const previous = this._touches.get(clientId);
      if (previous?.touch === touch) {
        continue;
      }
      this._touches.set(clientId, { touch, cellId, at: Date.now() });
      if (previous !== undefined || change.updated.includes(clientId)) {
        this._emitActivity(clientId, state, cellId, 'touched');
      }
    }
    this._update();
  };

  /** Edits by agents: text they typed, cells they inserted, metadata they
   * set. Attributed by the Yjs client id of what was inserted, which is the
   * agent's awareness id (pycrdt's and Yjs's awareness both use the
   * document's client id). */
  private _onCellsChange = (
    events: Y.YEvent<any>[],
    transaction: Y.Transaction
  ): void => {
    if (transaction.local) {
      return;
    }
    const states = this._awareness.getStates();
    const agentOf = (client: number | undefined): boolean => {
      const state = client === undefined ? undefined : states.get(client);
      return !!state && client !== this._awareness.clientID && isAgent(state);
    };
    const moved = new Set<Y.Text>(); // where agents' carets were or are now
    for (const event of events) {
      const path = event.path;
      if (path.length === 0) {
        // Cells inserted (a move is a delete and an insert).
        for (const op of event.changes.delta) {
          for (const inserted of (op.insert as unknown[]) ?? []) {
            if (inserted instanceof Y.Map) {
              const client = inserted._item?.id.client;
              const id = inserted.get('id');
              const source = inserted.get('source');
              if (agentOf(client) && typeof id === 'string') {
                if (source instanceof Y.Text) {
                  // Its caret: at the end of the text it wrote.
                  this._setCaret(client!, id, source, source.length, moved);
                }
                this._emitActivity(client!, states.get(client!)!, id, 'edited');
              }
            }
          }
        }
        continue;
      }
      const cell = this._cells.get(path[0] as number);
      const cellId = cell instanceof Y.Map ? cell.get('id') : null;
      if (typeof cellId !== 'string') {
        continue;
      }
      if (
        path.length === 2 &&
        path[1] === 'source' &&
        event.target instanceof Y.Text
      ) {
        // The source: where each insert ends is the typist's caret.
        const source = event.target as Y.Text;
        let index = 0;
        for (const op of event.changes.delta) {
          if (op.retain !== undefined) {
            index += op.retain;
          } else if (op.insert !== undefined) {
            const length = typeof op.insert === 'string' ? op.insert.length : 1;
            const at = Y.createRelativePositionFromTypeIndex(source, index);
            const client = at.item?.client;
            index += length;
            if (agentOf(client)) {
              this._setCaret(client!, cellId, source, index, moved);
              this._emitActivity(
                client!,
                states.get(client!)!,
                cellId,
                'edited'
              );
            }
          }
        }
      } else if (
        event.target instanceof Y.Map &&
        (path.length === 1 || (path.length === 2 && path[1] === 'metadata'))
      ) {
        // A cell's own keys (type, source replaced) or its metadata.
        const items = (event.target as unknown as { _map?: Map<string, any> })
          ._map;
        for (const key of (event as Y.YMapEvent<unknown>).keysChanged) {
          if (path.length === 2 && key === 'kernel_collab') {
            this._noteRunRecord(cellId, event.target.get(key));
          }
          const client = items?.get(key)?.id?.client as number | undefined;
          if (
            path.length === 1 &&
            key !== 'source' &&
            key !== 'cell_type' &&
            key !== 'metadata'
          ) {
            continue; // outputs, counts, states: the kernel's side
          }
          if (agentOf(client) && !items?.get(key)?.deleted) {
            this._emitActivity(client!, states.get(client!)!, cellId, 'edited');
          }
        }
      }
    }
    if (moved.size) {
      this._caretsChanged.emit(moved);
    }
  };

  /** An agent's caret is now at `index` in a cell's `source` (after what it
   * typed there); `moved` gets the text it was in and this one. */
  private _setCaret(
    clientId: number,
    cellId: string,
    source: Y.Text,
    index: number,
    moved: Set<Y.Text>
  ): void {
    this._forgetCaret(clientId, moved);
    this._carets.set(clientId, {
      cellId,
      position: Y.createRelativePositionFromTypeIndex(source, index, -1)
    });
    moved.add(source);
  }

  /** Forget an agent's caret, if it has one; `left` gets the text it was in. */
  private _forgetCaret(clientId: number, left: Set<Y.Text>): boolean {
    const caret = this._carets.get(clientId);
    if (!caret) {
      return false;
    }
    const type = this._resolve(caret.position)?.type;
    if (type instanceof Y.Text) {
      left.add(type);
    }
    return this._carets.delete(clientId);
  }

  /** Where a relative position is now in this document, if anywhere. */
  private _resolve(position: Y.RelativePosition): Y.AbsolutePosition | null {
    try {
      return Y.createAbsolutePositionFromRelativePosition(position, this._doc);
    } catch {
      return null;
    }
  }

  /** Runs agents asked for: a new queue entry or running cell that an agent
   * touched just before, asked as the identity it connected as. */
  private _onTransaction = (transaction: Y.Transaction): void => {
    // The room's state (the queue, the running cell) or the list of cells
    // changed: once a frame (outputs stream in many small transactions).
    const changed =
      transaction.changedParentTypes.has(this._state as Y.AbstractType<any>) ||
      transaction.changed.has(this._cells);
    if (changed && !this._scheduled) {
      this._scheduled = true;
      requestAnimationFrame(this._afterTransactions);
    }
  };

  private _afterTransactions = (): void => {
    this._scheduled = false;
    if (this._disposed) {
      return;
    }
    for (const entry of this._newRuns()) {
      this._explainRun(entry);
    }
    // A cell moved or deleted changes where people are shown.
    this._update();
  };

  /** Queue entries and the running cell not seen before. */
  private _newRuns(): IQueueEntry[] {
    const state = roomState(this.provider.model);
    const entries: IQueueEntry[] = [
      ...(state.running ? [state.running] : []),
      ...(state.queue ?? [])
    ];
    const seen = new Set<string>();
    const fresh: IQueueEntry[] = [];
    for (const entry of entries) {
      const key = `${entry.cell_id}\u0000${text(entry.at)}`;
      seen.add(key);
      if (!this._runs.has(key)) {
        fresh.push(entry);
      }
    }
    this._runs = seen;
    return fresh;
  }

  /**
   * A cell's run record changed: a run that started since is a new run (seen
   * here even when it started and ended between two frames, or in one
   * update: the sidecar relays merged updates).
   */
  private _noteRunRecord(cellId: string, value: unknown): void {
    const record = value instanceof Y.Map ? value.toJSON() : value;
    const run = isObject(record) ? record.last_run : null;
    const start = isObject(run) ? run.start : null;
    if (typeof start !== 'number' || this._runStarts.get(cellId) === start) {
      return;
    }
    this._runStarts.set(cellId, start);
    this._explainRun({ cell_id: cellId, by: run!.by });
  }

  /** The start of each cell's last run, as known here. */
  private _knownRunStarts(): void {
    for (const cell of this._cells.toArray()) {
      const metadata = cell instanceof Y.Map ? cell.get('metadata') : null;
      const ours =
        metadata instanceof Y.Map ? metadata.get('kernel_collab') : null;
      const record = ours instanceof Y.Map ? ours.toJSON() : ours;
      const start = isObject(record) ? record.last_run?.start : null;
      const id = cell instanceof Y.Map ? cell.get('id') : null;
      if (typeof start === 'number' && typeof id === 'string') {
        this._runStarts.set(id, start);
      }
    }
  }

  private _explainRun(entry: { cell_id: string; by: unknown }): void {
    const states = this._awareness.getStates();
    const by = isObject(entry.by) ? entry.by : {};
    const now = Date.now();
    for (const [clientId, touch] of this._touches) {
      const state = states.get(clientId);
      if (
        !state ||
        touch.cellId !== entry.cell_id ||
        now - touch.at > TOUCH_EXPLAINS_RUN_MS
      ) {
        continue;
      }
      const user = isObject(state.user) ? state.user : {};
      const username = text(user.username);
      const kernel = this._describe(clientId, state).kind === 'kernel';
      // The kernel's API asks on behalf of whoever runs its cell.
      const same = username
        ? text(by.username) === username
        : kernel || text(by.name) === text(user.name);
      if (same) {
        this._emitActivity(clientId, state, entry.cell_id, 'ran');
      }
    }
  }

  private _emitActivity(
    clientId: number,
    state: Record<string, any>,
    cellId: string,
    verb: IActivity['verb']
  ): void {
    this._activity.emit({
      collaborator: this._describe(clientId, state),
      cellId,
      verb
    });
  }

  private _doc: Y.Doc;
  private _awareness: IAwarenessLike;
  private _cells: Y.Array<any>;
  private _state: Y.Map<any>;
  private _collaborators: ICollaborator[] = [];
  private _carets = new Map<
    number,
    { cellId: string; position: Y.RelativePosition }
  >();
  private _touches = new Map<
    number,
    { touch: string; cellId: string; at: number }
  >();
  private _runs = new Set<string>();
  private _runStarts = new Map<string, number>();
  private _scheduled = false;
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
  private _activity = new Signal<this, IActivity>(this);
  private _caretsChanged = new Signal<this, ReadonlySet<Y.Text>>(this);
}

const REGISTRY = new WeakMap<Y.Doc, Presence>();

/** The presence of a provider's notebook (made once, for all its views). */
export function presenceOf(provider: CollabProvider): Presence {
  return Presence.of(provider.model.ydoc) ?? new Presence(provider);
}
