// What a collaborative notebook shows everyone: the room bar (kernel status, what runs, the
// queue, who is here), banners for the sidecar's states, and each cell's run mark.
import { ISharedNotebook } from '@jupyter/ydoc';
import { Cell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';
import { CollabProvider } from './provider';
import { IPerson, IRoomState, lastRun, personName, roomState } from './state';

/** Escape text for HTML. */
function esc(text: string): string {
  const div = document.createElement('div');
  div.textContent = text;
  return div.innerHTML;
}

function clock(seconds: number | null | undefined): string {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : '';
}

/** Size a header widget to its content: the header is a Lumino box layout, which sizes its
 * children from their CSS limits, not from what they hold. */
function fitToContent(widget: Widget): void {
  widget.node.style.minHeight = '';
  if (!widget.isHidden) {
    widget.node.style.minHeight = `${widget.node.scrollHeight}px`;
  }
  widget.parent?.fit();
}

/** The room bar above the notebook: kernel status, the running cell, the queue and who is here. */
export class RoomBar extends Widget {
  constructor() {
    super();
    this.addClass('kc-room-bar');
  }

  render(html: string): void {
    if (html !== this._html) {
      this._html = html;
      this.node.innerHTML = html;
      fitToContent(this);
    }
  }

  private _html = '';
}

/** The banner above the notebook: one line per state people must know about. */
export class Banner extends Widget {
  constructor() {
    super();
    this.addClass('kc-banners');
    this.hide();
  }

  setMessages(messages: { kind: string; text: string }[]): void {
    const html = messages
      .map(m => `<div class="kc-banner kc-banner-${esc(m.kind)}" role="status">${esc(m.text)}</div>`)
      .join('');
    if (html !== this._html) {
      this._html = html;
      this.node.innerHTML = html;
      this.setHidden(messages.length === 0);
      fitToContent(this);
    }
  }

  private _html = '';
}

/** The banners the sidecar's state and the connection call for. */
export function banners(state: IRoomState, provider: CollabProvider): { kind: string; text: string }[] {
  const out: { kind: string; text: string }[] = [];
  if (!provider.canWrite) {
    out.push({ kind: 'read-only', text: 'You can read this notebook but not edit it.' });
  }
  const connection = provider.connectionState;
  if (connection === 'reconnecting') {
    out.push({ kind: 'reconnecting', text: 'Reconnecting to the notebook\'s kernel sidecar… your edits are kept and will be sent when it is back.' });
  } else if (connection === 'closed') {
    out.push({ kind: 'closed', text: 'This copy of the notebook was closed by the sidecar; it reopens.' });
  }
  if (state.file_error) {
    out.push({ kind: 'file-error', text: `The file on disk could not be read (${state.file_error}); autosave is paused until the notebook is saved.` });
  } else if (state.autosave === 'paused') {
    out.push({ kind: 'autosave-paused', text: 'Autosave is paused.' });
  }
  if (state.save_error) {
    out.push({ kind: 'save-error', text: `Saving failed: ${state.save_error}. Your work is kept in the notebook's store.` });
  }
  if (state.store_error) {
    out.push({ kind: 'store-error', text: `The notebook's store could not be written: ${state.store_error}. Changes are kept in memory and retried.` });
  }
  if (state.merge_conflicts && state.merge_conflicts.length) {
    out.push({ kind: 'merge-conflict', text: `${state.merge_conflicts.length} cell(s) changed both here and in the file on disk; the live text is kept in each cell's metadata.` });
  }
  const waiting = state.waiting_for_input;
  if (waiting) {
    out.push({ kind: 'input', text: `The kernel is waiting for input from ${waiting.from ?? 'someone'}.` });
  }
  const status = state.kernel_status;
  if (status === 'dead') {
    out.push({ kind: 'kernel-dead', text: 'The kernel died. Restart it to run cells.' });
  } else if (status === 'none') {
    out.push({ kind: 'kernel-none', text: 'No kernel is running for this notebook.' });
  }
  return out;
}

function dot(person: IPerson | undefined): string {
  const color = person?.color ?? '#888';
  return `<span class="kc-person" style="border-color: ${esc(color)}">${esc(personName(person))}</span>`;
}

/** The room bar's content. */
export function roomBarHtml(state: IRoomState, model: ISharedNotebook, people: IPerson[]): string {
  const index = new Map(model.cells.map((c, i) => [c.getId(), i + 1]));
  const status = state.kernel_status ?? 'unknown';
  const parts = [`<span class="kc-kernel-status" data-status="${esc(status)}">Kernel: ${esc(status)}</span>`];
  if (state.running) {
    parts.push(`<span class="kc-running">Running cell ${index.get(state.running.cell_id) ?? '?'} for ${dot(state.running.by)}</span>`);
  }
  const queue = state.queue ?? [];
  const entries = queue
    .map(e => `<li class="kc-queue-entry">cell ${index.get(e.cell_id) ?? '?'} · ${dot(e.by)}</li>`)
    .join('');
  parts.push(`<span class="kc-queue" data-length="${queue.length}">Queue: ${queue.length}${queue.length ? `<ol class="kc-queue-list">${entries}</ol>` : ''}</span>`);
  const event = state.last_kernel_event;
  if (event?.event) {
    const verb = { interrupt: 'Interrupted', restart: 'Restarted', shutdown: 'Shut down', dead: 'Died' }[event.event] ?? event.event;
    const who = event.event === 'dead' ? '' : ` by ${esc(personName(event.by))}`;
    parts.push(`<span class="kc-last-event" data-event="${esc(event.event)}">${esc(verb)}${who} at ${esc(clock(event.at))}</span>`);
  }
  parts.push(`<span class="kc-people">Here: ${people.map(dot).join(' ')}</span>`);
  return parts.join('');
}

/** The people in the room, from the shared awareness (each person once). */
export function peopleHere(provider: CollabProvider): IPerson[] {
  const seen = new Map<string, IPerson>();
  provider.model.awareness.getStates().forEach(state => {
    const user = state.user as IPerson | undefined;
    if (user && (user.username || user.name)) {
      seen.set(user.username ?? user.name ?? '', user);
    }
  });
  return [...seen.values()];
}

/** Where scripts and the kernel are: the cell each last touched (awareness `kernel_collab`). */
export function clientsByCell(provider: CollabProvider): Map<string, IPerson[]> {
  const byCell = new Map<string, IPerson[]>();
  provider.model.awareness.getStates().forEach((state, clientId) => {
    const cellId = (state.kernel_collab as { cell_id?: string } | undefined)?.cell_id;
    if (clientId === provider.model.awareness.clientID || !cellId || state.cursors) {
      return;
    }
    byCell.set(cellId, [...(byCell.get(cellId) ?? []), (state.user ?? {}) as IPerson]);
  });
  return byCell;
}

/** Show which clients (scripts, agents, the kernel) are at a cell. */
export function markClients(cell: Cell, clients: IPerson[] | undefined): void {
  let node = cell.node.querySelector(':scope > .kc-clients-here') as HTMLElement | null;
  if (!clients?.length) {
    node?.remove();
    return;
  }
  if (!node) {
    node = document.createElement('div');
    node.className = 'kc-clients-here';
    cell.node.insertBefore(node, cell.node.firstChild);
  }
  const html = clients.map(dot).join(' ') + ' here';
  if (node.dataset.html !== html) {
    node.dataset.html = html;
    node.innerHTML = html;
  }
}

/** Keep a cell's run mark ("queued #2 · Bob", "running · Alice", "ran by Alice at …"). */
export function markCell(cell: Cell, state: IRoomState): void {
  if (cell.model.type !== 'code') {
    return;
  }
  const id = cell.model.sharedModel.getId();
  const queue = state.queue ?? [];
  const position = queue.findIndex(e => e.cell_id === id);
  const last = lastRun(cell.model.sharedModel.getMetadata() as Record<string, unknown>);
  let text = '';
  let kind = '';
  if (state.running?.cell_id === id) {
    text = `running · ${personName(state.running.by)}`;
    kind = 'running';
  } else if (position >= 0) {
    text = `queued #${position + 1} · ${personName(queue[position].by)}`;
    kind = 'queued';
  } else if (last) {
    const status = last.status === 'ok' ? '' : ` (${last.status})`;
    text = `ran by ${personName(last.by)} at ${clock(last.end ?? last.start)}${status}`;
    kind = last.status;
  }
  let node = cell.node.querySelector(':scope > .kc-run-by') as HTMLElement | null;
  if (!text) {
    node?.remove();
    return;
  }
  if (!node) {
    node = document.createElement('div');
    node.className = 'kc-run-by';
    cell.node.insertBefore(node, cell.node.firstChild);
  }
  if (node.textContent !== text) {
    node.textContent = text;
    node.dataset.kind = kind;
  }
}

/** Wire one collaborative notebook panel to its provider: bar, banners, marks, trust. */
export function decoratePanel(panel: NotebookPanel, provider: CollabProvider): void {
  const bar = new RoomBar();
  const banner = new Banner();
  // Above the notebook, full width: the toolbar would hide what does not fit in a menu.
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
    bar.render(roomBarHtml(state, model, peopleHere(provider)));
    if (!provider.canWrite && !panel.context.model.readOnly) {
      panel.context.model.readOnly = true;
      panel.addClass('kc-read-only');
    }
    const clients = clientsByCell(provider);
    for (const cell of panel.content.widgets) {
      markCell(cell, state);
      markClients(cell, clients.get(cell.model.sharedModel.getId()));
      if (!provider.canWrite && !cell.readOnly) {
        cell.readOnly = true;
      }
      // Outputs made by the kernel render trusted for those who may run it, not for readers
      // (marking a cell trusted writes to its metadata, so it needs the right to edit too).
      const trust = provider.canExecute && provider.canWrite;
      if (cell.model.type === 'code' && cell.model.trusted !== trust) {
        cell.model.trusted = trust;
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
