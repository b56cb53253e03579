// What a collaborative notebook shows everyone: the room bar in the
// notebook's toolbar (kernel status, what runs and for whom, the queue), the
// collaborators' icons next to it, banners for the sidecar's states, each
// cell's run mark, and the scripts and agents at work in cells.
import { ISharedNotebook } from '@jupyter/ydoc';
import { Cell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';
import * as Y from 'yjs';
import { ToolbarUsers, avatar, describe, registerPanel } from './collaborators';
import { IActivity, ICollaborator, presenceOf } from './presence';
import { CollabProvider } from './provider';
import {
  IPerson,
  IQueueEntry,
  IRoomState,
  cellLastRun,
  personName,
  roomState,
  safeColor,
  text
} from './state';

// Everything here shows data any peer can write (names and colours in
// awareness, cell ids and run records in the document, the room's state): it is
// built with DOM nodes, text as text nodes and styles through properties, never
// parsed as HTML.

/** What an element holds: text (a text node, never HTML) or elements. */
export type Content = string | Node;

/** A new element with a class name and content. */
export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  ...content: Content[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  node.append(...content);
  return node;
}

function clock(seconds: unknown): string {
  return typeof seconds === 'number' && isFinite(seconds) && seconds
    ? new Date(seconds * 1000).toLocaleTimeString()
    : '';
}

/** A name, clipped by CSS when long (the full name in its tooltip). */
function nameMark(name: string): HTMLElement {
  const node = element('span', 'kc-name', name);
  node.title = name;
  return node;
}

/** A person: their name with their colour (checked) at its side. */
function personMark(person: IPerson | undefined): HTMLElement {
  const name = personName(person);
  const node = element('span', 'kc-person', name);
  node.title = name;
  node.style.borderColor = safeColor(person?.color);
  return node;
}

/** Put `content` in `node` unless it already holds the same (no relayout, no
 * flicker). */
function replaceContent(node: HTMLElement, content: Content[]): boolean {
  const fresh = element('div', '', ...content);
  const children = Array.from(fresh.childNodes);
  const same =
    children.length === node.childNodes.length &&
    children.every((child, i) => child.isEqualNode(node.childNodes[i]));
  if (!same) {
    node.replaceChildren(...children);
  }
  return !same;
}

/** Size a header widget to its content: the header is a Lumino box layout,
 * which sizes its children from their CSS limits, not from what they hold. */
function fitToContent(widget: Widget): void {
  const style = widget.node.style;
  // Measured at the header's width (a widget shown for the first time has none
  // yet) and without the height the layout last gave it (or it would never
  // shrink).
  const { height, width } = style;
  const available = widget.parent?.node.clientWidth;
  style.minHeight = '';
  style.height = '';
  if (available) {
    style.width = `${available}px`;
  }
  const needed = widget.node.scrollHeight;
  style.height = height;
  style.width = width;
  if (!widget.isHidden) {
    style.minHeight = `${needed}px`;
  }
  widget.parent?.fit();
}

/** The room bar, an item of the notebook's toolbar: the shared kernel's
 * status, the running cell and for whom, the queue's length (a button that
 * opens the list), and who last interrupted or restarted the kernel. */
export class RoomBar extends Widget {
  constructor(private readonly _goToCell: (cellId: string) => void) {
    super();
    this.addClass('kc-room-bar');
    this.addClass('jp-Toolbar-item');
    this.node.addEventListener('click', this._onClick);
    this._resizes = new ResizeObserver(() => this.fit());
  }

  /** Fewest pixels the room bar takes: the kernel's status and the queue. */
  static minWidth = 140;
  /** Most pixels it takes. */
  static maxWidth = 420;

  render(content: Content[], queue: HTMLElement[]): void {
    // The toolbar sets its buttons' tabindex (its arrow keys move the focus):
    // the queue's button keeps the one it has, or it would be replaced (and
    // lose the focus) at every refresh.
    const tabIndex = this._queueButton()?.getAttribute('tabindex');
    for (const part of content) {
      if (part instanceof HTMLElement && part.classList.contains('kc-queue')) {
        part.setAttribute('aria-expanded', String(!!this._popup));
        if (tabIndex !== null && tabIndex !== undefined) {
          part.setAttribute('tabindex', tabIndex);
        }
      }
    }
    if (replaceContent(this.node, content)) {
      this.fit();
    }
    this._entries = queue;
    this._popup?.render(queue);
  }

  /**
   * Take the toolbar's room that its other items leave, within
   * [minWidth, maxWidth]. JupyterLab's toolbar moves the items that do not fit
   * into its "more" menu, measuring their widths: a room bar that took up the
   * slack (a shrinking flex item) would leave it none, and go there itself.
   */
  fit(): void {
    const toolbar = this.node.parentElement;
    if (!toolbar || !toolbar.classList.contains('jp-NotebookPanel-toolbar')) {
      this.node.style.maxWidth = '';
      return;
    }
    let others = 0;
    for (const item of Array.from(toolbar.children)) {
      if (!this._observed.has(item)) {
        this._observed.add(item); // its width changes: fit again
        this._resizes.observe(item);
      }
      if (
        item !== this.node &&
        !item.classList.contains('jp-Toolbar-spacer') &&
        !item.classList.contains('jp-Toolbar-responsive-opener')
      ) {
        others += item.getBoundingClientRect().width;
      }
    }
    // The toolbar's padding and its "more" button (32 px), and some slack.
    const room = toolbar.clientWidth - others - 7 - 32 - 12;
    const width = Math.max(
      RoomBar.minWidth,
      Math.min(RoomBar.maxWidth, Math.floor(room))
    );
    const value = `${width}px`;
    if (this.node.style.maxWidth !== value) {
      this.node.style.maxWidth = value;
    }
  }

  /** Open or close the queue's list. */
  toggleQueue(): void {
    if (this._popup || !this._queueButton()) {
      this._popup?.dispose();
      return;
    }
    const popup = new QueuePopup(this._queueButton, this._goToCell, () => {
      if (this._popup === popup) {
        this._popup = null;
        this._queueButton()?.setAttribute('aria-expanded', 'false');
      }
    });
    this._popup = popup;
    popup.render(this._entries);
    this._queueButton()?.setAttribute('aria-expanded', 'true');
  }

  dispose(): void {
    this._popup?.dispose();
    this._resizes.disconnect();
    super.dispose();
  }

  protected onAfterAttach(): void {
    const toolbar = this.node.parentElement;
    if (toolbar) {
      this._resizes.observe(toolbar);
    }
    this.fit();
  }

  protected onBeforeDetach(): void {
    this._resizes.disconnect();
    this._observed = new WeakSet();
  }

  private _queueButton = (): HTMLElement | null =>
    this.node.querySelector('.kc-queue');

  protected onBeforeHide(): void {
    this._popup?.dispose();
  }

  private _onClick = (event: MouseEvent): void => {
    if ((event.target as Element).closest('.kc-queue')) {
      this.toggleQueue();
    }
  };

  private _entries: HTMLElement[] = [];
  private _popup: QueuePopup | null = null;
  private _resizes: ResizeObserver;
  private _observed = new WeakSet<Element>();
}

/** The queue's list, under its button; closed by a click elsewhere or
 * Escape. A click on an entry scrolls to its cell. */
class QueuePopup {
  constructor(
    private readonly _button: () => HTMLElement | null,
    private readonly _goToCell: (cellId: string) => void,
    private readonly _onClose: () => void
  ) {
    this._node = element('div', 'kc-queue-popup');
    this._node.setAttribute('role', 'dialog');
    this._node.setAttribute('aria-label', 'The queue');
    this._node.addEventListener('click', this._onClick);
    document.body.append(this._node);
    document.addEventListener('pointerdown', this._onPointer, true);
    document.addEventListener('keydown', this._onKey, true);
  }

  render(entries: HTMLElement[]): void {
    const content: Content[] = entries.length
      ? [element('ol', 'kc-queue-list', ...entries)]
      : [element('p', 'kc-queue-empty', 'Nothing is queued.')];
    replaceContent(this._node, [
      element('div', 'kc-queue-title', `Queue: ${entries.length}`),
      ...content
    ]);
    const button = this._button();
    if (!button) {
      return;
    }
    const box = button.getBoundingClientRect();
    const width = this._node.offsetWidth;
    const left = Math.max(4, Math.min(box.left, window.innerWidth - width - 4));
    this._node.style.top = `${Math.round(box.bottom + 2)}px`;
    this._node.style.left = `${Math.round(left)}px`;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    document.removeEventListener('pointerdown', this._onPointer, true);
    document.removeEventListener('keydown', this._onKey, true);
    this._node.remove();
    this._onClose();
  }

  private _onClick = (event: MouseEvent): void => {
    const entry = (event.target as Element).closest(
      '.kc-queue-entry'
    ) as HTMLElement | null;
    if (entry?.dataset.cell) {
      this._goToCell(entry.dataset.cell);
    }
  };

  private _onPointer = (event: PointerEvent): void => {
    const target = event.target as Node;
    if (!this._node.contains(target) && !this._button()?.contains(target)) {
      this.dispose();
    }
  };

  private _onKey = (event: KeyboardEvent): void => {
    if (event.key === 'Escape') {
      this.dispose();
    }
  };

  private _node: HTMLElement;
  private _disposed = false;
}

/** One banner: its kind (a fixed word of ours, in its class) and what it
 * says. */
export interface IBannerMessage {
  kind: string;
  text: Content[];
}

/** The banner above the notebook: one line per state people must know about. */
export class Banner extends Widget {
  constructor() {
    super();
    this.addClass('kc-banners');
    this.hide();
  }

  setMessages(messages: IBannerMessage[]): void {
    const lines = messages.map(m => {
      const line = element('div', 'kc-banner', ...m.text);
      line.classList.add(`kc-banner-${m.kind}`);
      line.setAttribute('role', 'status');
      return line;
    });
    if (
      replaceContent(this.node, lines) ||
      this.isHidden !== (messages.length === 0)
    ) {
      this.setHidden(messages.length === 0);
      fitToContent(this);
    }
  }
}

/** The banners the sidecar's state and the connection call for. */
export function banners(
  state: IRoomState,
  provider: CollabProvider
): IBannerMessage[] {
  const out: IBannerMessage[] = [];
  const add = (kind: string, ...content: Content[]): void => {
    out.push({ kind, text: content });
  };
  if (!provider.canWrite) {
    add('read-only', 'You can read this notebook but not edit it.');
  }
  const connection = provider.connectionState;
  if (connection === 'reconnecting') {
    add(
      'reconnecting',
      "Reconnecting to the notebook's kernel sidecar… your edits are kept " +
        'and will be sent when it is back.'
    );
  } else if (connection === 'closed') {
    add(
      'closed',
      'This copy of the notebook was closed by the sidecar; it reopens.'
    );
  }
  if (state.file_error) {
    add(
      'file-error',
      `The file on disk could not be read (${text(state.file_error)}); ` +
        'autosave is paused until the notebook is saved.'
    );
  } else if (state.autosave === 'paused') {
    add('autosave-paused', 'Autosave is paused.');
  }
  if (state.save_error) {
    add(
      'save-error',
      `Saving failed: ${text(state.save_error)}. ` +
        "Your work is kept in the notebook's store."
    );
  }
  if (state.store_error) {
    add(
      'store-error',
      "The notebook's store could not be written: " +
        `${text(state.store_error)}. Changes are kept in memory and retried.`
    );
  }
  if (state.merge_conflicts && state.merge_conflicts.length) {
    add(
      'merge-conflict',
      `${state.merge_conflicts.length} cell(s) changed both here and in the ` +
        "file on disk; the live text is kept in each cell's metadata."
    );
  }
  const waiting = state.waiting_for_input;
  if (waiting) {
    add(
      'input',
      'The kernel is waiting for input from ',
      nameMark(text(waiting.from) || 'someone'),
      '.'
    );
  }
  const status = state.kernel_status;
  if (status === 'dead') {
    add('kernel-dead', 'The kernel died. Restart it to run cells.');
  } else if (status === 'none') {
    add('kernel-none', 'No kernel is running for this notebook.');
  }
  return out;
}

const EVENT_VERBS: Record<string, string> = {
  interrupt: 'Interrupted',
  restart: 'Restarted',
  shutdown: 'Shut down',
  dead: 'Died',
  failed: 'Kernel did not start'
};

/** Events that nobody asked for: no "by whom". */
const UNASKED_EVENTS = new Set(['dead', 'failed']);

/** The room bar's content (kernel status, running cell, the queue's button,
 * the last kernel event) and the queue's entries (for its list). */
export function roomBarContent(
  state: IRoomState,
  model: ISharedNotebook
): { parts: HTMLElement[]; queue: HTMLElement[] } {
  const index = new Map(model.cells.map((c, i) => [c.getId(), i + 1]));
  const position = (cellId: string): string => String(index.get(cellId) ?? '?');
  const status = text(state.kernel_status) || 'unknown';
  const kernel = element(
    'span',
    'kc-kernel-status',
    element('span', 'kc-status-dot'),
    status
  );
  kernel.dataset.status = status;
  kernel.title = `The notebook's shared kernel is ${status}`;
  const parts: HTMLElement[] = [kernel];
  if (state.running) {
    const running = element(
      'span',
      'kc-running',
      element(
        'span',
        'kc-running-label',
        `Running cell ${position(state.running.cell_id)} for `
      ),
      personMark(state.running.by)
    );
    running.title =
      `Running cell ${position(state.running.cell_id)} ` +
      `for ${personName(state.running.by)}`;
    parts.push(running);
  }
  const queue = state.queue ?? [];
  const entries = queue.map((e: IQueueEntry) => {
    const entry = element(
      'li',
      'kc-queue-entry',
      `cell ${position(e.cell_id)} · `,
      personMark(e.by)
    );
    entry.dataset.cell = e.cell_id;
    entry.title = `Go to cell ${position(e.cell_id)}`;
    return entry;
  });
  const queueButton = element(
    'button',
    'kc-queue jp-ToolbarButtonComponent',
    element('span', 'kc-queue-label', `Queue: ${queue.length}`)
  );
  queueButton.type = 'button';
  queueButton.dataset.length = String(queue.length);
  queueButton.title = queue.length
    ? `${queue.length} cell(s) waiting to run: show the queue`
    : 'Nothing waits to run: show the queue';
  queueButton.setAttribute('aria-haspopup', 'dialog');
  parts.push(queueButton);
  const event = state.last_kernel_event;
  const eventName = text(event?.event);
  if (event && eventName) {
    const verb = Object.prototype.hasOwnProperty.call(EVENT_VERBS, eventName)
      ? EVENT_VERBS[eventName]
      : eventName;
    const unasked = UNASKED_EVENTS.has(eventName);
    const who: Content[] = unasked
      ? []
      : [' by ', nameMark(personName(event.by))];
    const node = element('span', 'kc-last-event', verb, ...who);
    const error = text(event.error);
    node.title =
      `${verb}${unasked ? '' : ` by ${personName(event.by)}`}` +
      ` at ${clock(event.at)}${error ? `: ${error}` : ''}`;
    node.dataset.event = eventName;
    parts.push(node);
  }
  return { parts, queue: entries };
}

/** An agent at work in a cell, and what it did last (for a few seconds). */
export interface IAgentMark {
  who: ICollaborator;
  verb: IActivity['verb'] | null;
}

/** Where scripts and the kernel are: the cell each last touched (awareness
 * `kernel_collab.cell_id`), from the notebook's presence. */
export function agentsByCell(
  collaborators: ICollaborator[]
): Map<string, ICollaborator[]> {
  const byCell = new Map<string, ICollaborator[]>();
  for (const who of collaborators) {
    if (who.kind !== 'person' && who.cellId && !who.self) {
      byCell.set(who.cellId, [...(byCell.get(who.cellId) ?? []), who]);
    }
  }
  return byCell;
}

/** Put a cell mark (`.kc-run-by`, `.kc-clients-here`), built whole, first in
 * the cell unless the same is there already; `fresh` null removes the cell's
 * mark of that class. */
function setCellMark(
  cell: Cell,
  className: string,
  fresh: HTMLElement | null
): void {
  const node = cell.node.querySelector(
    `:scope > .${className}`
  ) as HTMLElement | null;
  if (!fresh) {
    node?.remove();
  } else if (!node) {
    cell.node.insertBefore(fresh, cell.node.firstChild);
  } else if (!node.isEqualNode(fresh)) {
    node.replaceWith(fresh);
  }
}

const VERBS: Record<string, string> = {
  edited: 'edited',
  ran: 'ran',
  touched: 'here'
};

/** An agent's name with its icon and colour (the name it connected with; the
 * identity it connected as in the tooltip). */
function agentMark(who: ICollaborator): HTMLElement {
  const node = element('span', 'kc-agent');
  node.dataset.kind = who.kind;
  node.style.setProperty('--kc-color', who.color); // checked by safeColor
  const icon = avatar(who);
  const name = element('span', 'kc-agent-name', who.name);
  node.append(icon, name);
  node.title = [who.name, describe(who)].join(' · ');
  return node;
}

/** Show which agents (scripts, the kernel) are at a cell or just worked on it:
 * "tidy-agent edited", "kernel here". A cell an agent just edited or ran is
 * outlined in its colour. */
export function markClients(cell: Cell, agents: IAgentMark[]): void {
  const active = agents.find(a => a.verb !== null);
  cell.toggleClass('kc-agent-active', !!active);
  if (active) {
    cell.node.style.setProperty('--kc-agent-color', active.who.color);
  }
  const content: Content[] = [];
  agents.forEach((agent, i) => {
    if (i) {
      content.push(' · ');
    }
    content.push(agentMark(agent.who), ` ${VERBS[agent.verb ?? 'touched']}`);
  });
  let mark: HTMLElement | null = null;
  if (agents.length) {
    mark = element('div', 'kc-clients-here', ...content);
    if (active) {
      mark.dataset.active = active.verb ?? '';
      mark.style.setProperty('--kc-agent-color', active.who.color);
    }
  }
  setCellMark(cell, 'kc-clients-here', mark);
}

/** Where each cell waits in the queue (0 first): its first entry. */
export function queuePositions(state: IRoomState): Map<string, number> {
  const positions = new Map<string, number>();
  (state.queue ?? []).forEach((entry, i) => {
    if (!positions.has(entry.cell_id)) {
      positions.set(entry.cell_id, i);
    }
  });
  return positions;
}

/** What a code cell's run mark says, before it is built: its kind, the text
 * before the person's name and the name, then (a past run) the time (seconds,
 * 0 for none) and what follows it. Null for no mark. */
interface IRunMark {
  kind: string;
  before: string;
  name: string;
  seconds?: number;
  after?: string;
}

function runMark(
  cell: Cell,
  state: IRoomState,
  positions: Map<string, number>
): IRunMark | null {
  const id = cell.model.sharedModel.getId();
  const position = positions.get(id);
  if (state.running?.cell_id === id) {
    return {
      kind: 'running',
      before: 'running · ',
      name: personName(state.running.by)
    };
  }
  if (position !== undefined) {
    return {
      kind: 'queued',
      before: `queued #${position + 1} · `,
      name: personName(state.queue![position].by)
    };
  }
  const last = cellLastRun(cell.model.sharedModel);
  if (!last) {
    return null;
  }
  const status = text(last.status);
  const fromFile = last.from_file === true;
  const at = last.end ?? last.start;
  return {
    kind: fromFile ? 'from-file' : status,
    before: 'ran by ',
    name: personName(last.by),
    seconds: typeof at === 'number' && isFinite(at) ? at : 0,
    after:
      (status === 'ok' ? '' : ` (${status})`) +
      (fromFile ? ' (per the file)' : '')
  };
}

/** Keep a cell's run mark ("queued #2 · Bob", "running · Alice", "ran by Alice
 * at …"). With `shown` (what each cell's mark says, kept by the caller), a
 * cell whose mark says the same is left alone. */
export function markCell(
  cell: Cell,
  state: IRoomState,
  positions = queuePositions(state),
  shown?: WeakMap<Cell, string>
): void {
  if (cell.model.type !== 'code') {
    return;
  }
  const mark = runMark(cell, state, positions);
  if (shown) {
    const key = JSON.stringify(mark);
    if (shown.get(cell) === key) {
      return;
    }
    shown.set(cell, key);
  }
  let node: HTMLElement | null = null;
  if (mark) {
    node = element('div', 'kc-run-by', mark.before, nameMark(mark.name));
    if (mark.after !== undefined) {
      node.append(` at ${clock(mark.seconds)}${mark.after}`);
    }
    node.dataset.kind = mark.kind;
  }
  setCellMark(cell, 'kc-run-by', node);
}

/** How long a cell an agent edited or ran stays highlighted (ms). */
export const AGENT_HIGHLIGHT_MS = 4000;

/** Where to put the room bar and the collaborators' icons: after the
 * toolbar's spacer (before the kernel's name), else at its end. */
function toolbarIndex(panel: NotebookPanel): number {
  const names = Array.from(panel.toolbar.names());
  const spacer = names.indexOf('spacer');
  return spacer >= 0 ? spacer + 1 : names.length;
}

/** Wire one collaborative notebook panel to its provider: the room bar and
 * collaborators in its toolbar, banners, marks, highlights, and this person's
 * cell in awareness. */
export function decoratePanel(
  panel: NotebookPanel,
  provider: CollabProvider,
  showCollaborators: () => void = () => undefined
): void {
  const presence = presenceOf(provider);
  const entry = registerPanel(panel, presence);
  const goToCell = (cellId: string): void => {
    const index = panel.content.widgets.findIndex(
      cell => cell.model.sharedModel.getId() === cellId
    );
    if (index >= 0) {
      void panel.content.scrollToItem(index, 'smart');
    }
  };
  const bar = new RoomBar(goToCell);
  const users = new ToolbarUsers(panel, entry, showCollaborators);
  const banner = new Banner();
  const at = toolbarIndex(panel);
  panel.toolbar.insertItem(at, 'kc-room-bar', bar);
  panel.toolbar.insertItem(at + 1, 'kc-collaborators', users);
  // Above the notebook, full width.
  panel.contentHeader.addWidget(banner);

  // Agents' work: a cell they edited or ran, highlighted for a few seconds.
  const recent = new Map<
    string,
    { who: ICollaborator; verb: IActivity['verb']; until: number }
  >();
  presence.activity.connect((_, activity) => {
    const known = recent.get(activity.cellId);
    const verb =
      activity.verb === 'touched' &&
      known?.who.key === activity.collaborator.key &&
      known.until > Date.now()
        ? known.verb
        : activity.verb;
    recent.set(activity.cellId, {
      who: activity.collaborator,
      verb,
      until: Date.now() + AGENT_HIGHLIGHT_MS
    });
    schedule();
    window.setTimeout(schedule, AGENT_HIGHLIGHT_MS + 50);
  });

  // What each cell's marks show: a refresh (each frame after an edit anywhere)
  // redraws only the cells whose marks change.
  const runMarks = new WeakMap<Cell, string>();
  const withoutAgents = new WeakSet<Cell>();
  let scheduled = false;
  const refresh = (): void => {
    scheduled = false;
    if (panel.isDisposed || provider.isDisposed) {
      return;
    }
    const model = provider.model;
    const state = roomState(model);
    banner.setMessages(banners(state, provider));
    const { parts, queue } = roomBarContent(state, model);
    bar.render(parts, queue);
    if (!provider.canWrite && !panel.context.model.readOnly) {
      panel.context.model.readOnly = true;
      panel.addClass('kc-read-only');
    }
    const now = Date.now();
    for (const [cellId, work] of recent) {
      if (work.until <= now) {
        recent.delete(cellId);
      }
    }
    const agents = agentsByCell(presence.collaborators);
    const positions = queuePositions(state);
    for (const cell of panel.content.widgets) {
      const id = cell.model.sharedModel.getId();
      markCell(cell, state, positions, runMarks);
      const marks: IAgentMark[] = (agents.get(id) ?? []).map(who => ({
        who,
        verb: null
      }));
      const work = recent.get(id);
      if (work) {
        const mark = marks.find(m => m.who.key === work.who.key);
        if (mark) {
          mark.verb = work.verb;
        } else {
          marks.unshift({ who: work.who, verb: work.verb });
        }
      }
      // A cell without agents' marks is cleared once, not at every refresh.
      if (marks.length || !withoutAgents.has(cell)) {
        markClients(cell, marks);
        if (marks.length) {
          withoutAgents.delete(cell);
        } else {
          withoutAgents.add(cell);
        }
      }
      if (!provider.canWrite && !cell.readOnly) {
        // Not saved to metadata.editable: a reader's updates are refused.
        cell.syncEditable = false;
        cell.readOnly = true;
      }
    }
  };
  const schedule = (): void => {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(refresh);
    }
  };
  // Nothing a refresh shows depends on cells' source texts: a transaction
  // that changed only those (typing, here or by others) needs none. On a
  // large notebook the refresh visits every cell, at every key otherwise.
  const ycells = provider.model.ydoc.getArray('cells');
  const isSource = (type: Y.AbstractType<any>): boolean => {
    const item = type._item;
    return (
      type instanceof Y.Text &&
      item?.parentSub === 'source' &&
      (item.parent as Y.AbstractType<any> | null)?._item?.parent === ycells
    );
  };
  const onTransaction = (transaction: Y.Transaction): void => {
    for (const type of transaction.changed.keys()) {
      if (!isSource(type)) {
        schedule();
        return;
      }
    }
  };
  const onActiveCell = (): void => {
    presence.setActiveCell(
      panel.content.activeCell?.model.sharedModel.getId() ?? null
    );
  };
  panel.content.activeCellChanged.connect(onActiveCell);
  provider.model.ydoc.on('afterTransaction', onTransaction);
  presence.changed.connect(schedule);
  provider.stateChanged.connect(schedule);
  panel.disposed.connect(() => {
    provider.model.ydoc.off('afterTransaction', onTransaction);
    presence.changed.disconnect(schedule);
  });
  void provider.ready.then(() => {
    onActiveCell();
    schedule();
  });
}
