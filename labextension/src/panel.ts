// What a collaborative notebook shows everyone: the room bar (kernel status,
// what runs, the queue, who is here), banners for the sidecar's states, and
// each cell's run mark.
import { ISharedNotebook } from '@jupyter/ydoc';
import { Cell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';
import { CollabProvider } from './provider';
import {
  IPerson,
  IRoomState,
  lastRun,
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
type Content = string | Node;

/** A new element with a class name and content. */
function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  ...content: Content[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  node.append(...content);
  return node;
}

/** Items with `separator` between them. */
function joined(items: Content[], separator: string): Content[] {
  return items.flatMap((item, i) => (i ? [separator, item] : [item]));
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

/** The room bar above the notebook: kernel status, the running cell, the queue
 * and who is here. */
export class RoomBar extends Widget {
  constructor() {
    super();
    this.addClass('kc-room-bar');
  }

  render(content: Content[]): void {
    if (replaceContent(this.node, content)) {
      fitToContent(this);
    }
  }
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
  dead: 'Died'
};

/** The room bar's content. */
export function roomBarContent(
  state: IRoomState,
  model: ISharedNotebook,
  people: IPerson[]
): HTMLElement[] {
  const index = new Map(model.cells.map((c, i) => [c.getId(), i + 1]));
  const position = (cellId: string): string => String(index.get(cellId) ?? '?');
  const status = text(state.kernel_status) || 'unknown';
  const kernel = element('span', 'kc-kernel-status', `Kernel: ${status}`);
  kernel.dataset.status = status;
  const parts: HTMLElement[] = [kernel];
  if (state.running) {
    parts.push(
      element(
        'span',
        'kc-running',
        `Running cell ${position(state.running.cell_id)} for `,
        personMark(state.running.by)
      )
    );
  }
  const queue = state.queue ?? [];
  const entries = queue.map(e =>
    element(
      'li',
      'kc-queue-entry',
      `cell ${position(e.cell_id)} · `,
      personMark(e.by)
    )
  );
  const queueNode = element('span', 'kc-queue', `Queue: ${queue.length}`);
  queueNode.dataset.length = String(queue.length);
  if (entries.length) {
    queueNode.append(element('ol', 'kc-queue-list', ...entries));
  }
  parts.push(queueNode);
  const event = state.last_kernel_event;
  const eventName = text(event?.event);
  if (event && eventName) {
    const verb = Object.prototype.hasOwnProperty.call(EVENT_VERBS, eventName)
      ? EVENT_VERBS[eventName]
      : eventName;
    const who: Content[] =
      eventName === 'dead' ? [] : [' by ', nameMark(personName(event.by))];
    const node = element(
      'span',
      'kc-last-event',
      verb,
      ...who,
      ` at ${clock(event.at)}`
    );
    node.dataset.event = eventName;
    parts.push(node);
  }
  parts.push(
    element(
      'span',
      'kc-people',
      'Here: ',
      ...joined(people.map(personMark), ' ')
    )
  );
  return parts;
}

/** The people in the room, from the shared awareness (each person once). */
export function peopleHere(provider: CollabProvider): IPerson[] {
  const seen = new Map<string, IPerson>();
  provider.model.awareness.getStates().forEach(state => {
    const user = state.user as IPerson | undefined;
    if (
      user &&
      typeof user === 'object' &&
      (text(user.username) || text(user.name))
    ) {
      seen.set(text(user.username) || text(user.name), user);
    }
  });
  return [...seen.values()];
}

/** Where scripts and the kernel are: the cell each last touched (awareness
 * `kernel_collab`). */
export function clientsByCell(
  provider: CollabProvider
): Map<string, IPerson[]> {
  const byCell = new Map<string, IPerson[]>();
  provider.model.awareness.getStates().forEach((state, clientId) => {
    const cellId = text(
      (state.kernel_collab as { cell_id?: unknown } | undefined)?.cell_id
    );
    if (
      clientId === provider.model.awareness.clientID ||
      !cellId ||
      state.cursors
    ) {
      return;
    }
    byCell.set(cellId, [
      ...(byCell.get(cellId) ?? []),
      (state.user ?? {}) as IPerson
    ]);
  });
  return byCell;
}

/** Put a cell mark (`.kc-run-by`, `.kc-clients-here`) first in the cell, or
 * update or remove it: `content` null removes it. */
function setCellMark(
  cell: Cell,
  className: string,
  content: Content[] | null,
  kind?: string
): void {
  const node = cell.node.querySelector(
    `:scope > .${className}`
  ) as HTMLElement | null;
  if (!content) {
    node?.remove();
    return;
  }
  const fresh = element('div', className, ...content);
  if (kind !== undefined) {
    fresh.dataset.kind = kind;
  }
  if (!node) {
    cell.node.insertBefore(fresh, cell.node.firstChild);
  } else if (!node.isEqualNode(fresh)) {
    node.replaceWith(fresh);
  }
}

/** Show which clients (scripts, agents, the kernel) are at a cell. */
export function markClients(cell: Cell, clients: IPerson[] | undefined): void {
  setCellMark(
    cell,
    'kc-clients-here',
    clients?.length ? [...joined(clients.map(personMark), ' '), ' here'] : null
  );
}

/** Keep a cell's run mark ("queued #2 · Bob", "running · Alice", "ran by Alice
 * at …"). */
export function markCell(cell: Cell, state: IRoomState): void {
  if (cell.model.type !== 'code') {
    return;
  }
  const id = cell.model.sharedModel.getId();
  const queue = state.queue ?? [];
  const position = queue.findIndex(e => e.cell_id === id);
  const last = lastRun(
    cell.model.sharedModel.getMetadata() as Record<string, unknown>
  );
  let content: Content[] | null = null;
  let kind = '';
  if (state.running?.cell_id === id) {
    content = ['running · ', nameMark(personName(state.running.by))];
    kind = 'running';
  } else if (position >= 0) {
    content = [
      `queued #${position + 1} · `,
      nameMark(personName(queue[position].by))
    ];
    kind = 'queued';
  } else if (last) {
    const status = text(last.status);
    const suffix = status === 'ok' ? '' : ` (${status})`;
    const from = last.from_file === true ? ' (per the file)' : '';
    content = [
      'ran by ',
      nameMark(personName(last.by)),
      ` at ${clock(last.end ?? last.start)}${suffix}${from}`
    ];
    kind = last.from_file === true ? 'from-file' : status;
  }
  setCellMark(cell, 'kc-run-by', content, kind);
}

/** Wire one collaborative notebook panel to its provider: bar, banners, marks,
 * trust. */
export function decoratePanel(
  panel: NotebookPanel,
  provider: CollabProvider
): void {
  const bar = new RoomBar();
  const banner = new Banner();
  // Above the notebook, full width: the toolbar would hide what does not fit in
  // a menu.
  panel.contentHeader.addWidget(bar);
  panel.contentHeader.addWidget(banner);
  let scheduled = false;
  const refresh = (): void => {
    scheduled = false;
    if (panel.isDisposed || provider.isDisposed) {
      return;
    }
    const model = provider.model;
    const state = roomState(model);
    banner.setMessages(banners(state, provider));
    bar.render(roomBarContent(state, model, peopleHere(provider)));
    if (!provider.canWrite && !panel.context.model.readOnly) {
      panel.context.model.readOnly = true;
      panel.addClass('kc-read-only');
    }
    const clients = clientsByCell(provider);
    for (const cell of panel.content.widgets) {
      markCell(cell, state);
      markClients(cell, clients.get(cell.model.sharedModel.getId()));
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
  provider.model.ydoc.on('afterTransaction', schedule);
  provider.model.awareness.on('change', schedule);
  provider.stateChanged.connect(schedule);
  panel.disposed.connect(() => {
    provider.model.ydoc.off('afterTransaction', schedule);
    provider.model.awareness.off('change', schedule);
  });
  void provider.ready.then(schedule);
}
