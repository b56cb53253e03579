// Who is in a collaborative notebook, shown the way JupyterLab users know from
// real-time collaboration: a collaborators panel (rows: avatar, name, role,
// the cell they are on), collaborators' icons in the notebook's toolbar (as
// jupyter-collaboration's `UsersItem`), jumping to a person's cell and caret,
// and following them.
//
// Built with DOM APIs: names and cell numbers as text, colours checked by
// `safeColor`, avatars only from http(s) URLs and set as properties.
import { NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon, kernelIcon, usersIcon } from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';
import { ICollaborator, Presence } from './presence';

/** Scripts and agents: a robot (Material Design's "smart_toy", Apache-2.0). */
export const agentIcon = new LabIcon({
  name: 'kernel-collab:agent',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#616161" d="M20 9V7c0-1.1-.9-2-2-2h-3c0-' +
    '1.66-1.34-3-3-3S9 3.34 9 5H6c-1.1 0-2 .9-2 2v2c-1.66 0-3 1.34-3 3s1.34 3' +
    ' 3 3v4c0 1.1.9 2 2 2h12c1.1 0 2-.9 2-2v-4c1.66 0 3-1.34 3-3s-1.34-3-3-3z' +
    'M7.5 11.5c0-.83.67-1.5 1.5-1.5s1.5.67 1.5 1.5S9.83 13 9 13s-1.5-.67-1.5-' +
    '1.5zM16 17H8v-2h8v2zm-1-4c-.83 0-1.5-.67-1.5-1.5S14.17 10 15 10s1.5.67 ' +
    '1.5 1.5-.67 1.5-1.5 1.5z"/></svg>'
});

/** Follow someone: an eye (Material Design's "visibility", Apache-2.0). */
export const followIcon = new LabIcon({
  name: 'kernel-collab:follow',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#616161" d="M12 4.5C7 4.5 2.73 7.61 1 12c1' +
    '.73 4.39 6 7.5 11 7.5s9.27-3.11 11-7.5c-1.73-4.39-6-7.5-11-7.5zM12 17c-2' +
    '.76 0-5-2.24-5-5s2.24-5 5-5 5 2.24 5 5-2.24 5-5 5zm0-8c-1.66 0-3 1.34-3 ' +
    '3s1.34 3 3 3 3-1.34 3-3-1.34-3-3-3z"/></svg>'
});

/** How long a jumped-to cell and caret are emphasized (ms). */
const FLASH_MS = 1500;

const ROLE_TITLES: Record<string, string> = {
  run: 'may edit and run code',
  edit: 'may edit, not run code',
  read: 'may only read'
};

/** Avatar URLs that failed to load in this page: their initials instead. */
const brokenAvatars = new Set<string>();

/** What a collaborator is, in words: "you", "script · as Alice", "kernel". */
export function describe(who: ICollaborator): string {
  if (who.kind === 'kernel') {
    return 'kernel';
  }
  if (who.kind === 'script') {
    return who.owner ? `script · as ${who.owner}` : 'script';
  }
  return who.self ? 'you' : '';
}

/** The tooltip of a collaborator: name, what they are, role, cell. */
function tooltip(who: ICollaborator, cellNumber: number | null): string {
  const parts = [who.name];
  const what = describe(who);
  if (what) {
    parts.push(what);
  }
  if (who.role) {
    parts.push(ROLE_TITLES[who.role]);
  }
  if (cellNumber !== null) {
    parts.push(`on cell ${cellNumber}`);
  }
  return parts.join(' · ');
}

/** A collaborator's icon: their avatar image, their initials on their colour,
 * or for an agent the agent (or kernel) icon ringed with their colour. */
export function avatar(who: ICollaborator): HTMLElement {
  const node = document.createElement('span');
  node.className = 'kc-avatar';
  node.dataset.kind = who.kind;
  node.style.setProperty('--kc-color', who.color); // checked by safeColor
  if (who.kind !== 'person') {
    const icon = who.kind === 'kernel' ? kernelIcon : agentIcon;
    node.append(icon.element({ tag: 'span', className: 'kc-avatar-icon' }));
  } else if (who.avatar && !brokenAvatars.has(who.avatar)) {
    const image = document.createElement('img');
    image.alt = '';
    image.referrerPolicy = 'no-referrer';
    image.src = who.avatar;
    image.addEventListener('error', () => {
      brokenAvatars.add(image.src);
      image.replaceWith(who.initials);
    });
    node.append(image);
  } else {
    node.textContent = who.initials;
  }
  return node;
}

/** The 1-based number of a cell in a panel's notebook, or null. */
export function cellNumber(
  panel: NotebookPanel,
  cellId: string | null
): number | null {
  if (!cellId) {
    return null;
  }
  const cells = panel.content.model?.sharedModel.cells ?? [];
  const index = cells.findIndex(cell => cell.getId() === cellId);
  return index >= 0 ? index + 1 : null;
}

/** Put `content` in `node` unless it holds the same already (no relayout, and
 * focus stays where it is). */
function replaceContent(node: HTMLElement, content: Node[]): void {
  const same =
    content.length === node.childNodes.length &&
    content.every((child, i) => child.isEqualNode(node.childNodes[i]));
  if (!same) {
    node.replaceChildren(...content);
  }
}

function isVisibleIn(element: Element, container: Element): boolean {
  const box = element.getBoundingClientRect();
  const frame = container.getBoundingClientRect();
  return (
    box.height > 0 && box.top >= frame.top && box.bottom <= frame.bottom + 1
  );
}

/** Emphasize an element for a moment (a class, removed after FLASH_MS). */
function flash(node: Element, className: string): void {
  node.classList.remove(className);
  void (node as HTMLElement).offsetWidth; // restart the animation
  node.classList.add(className);
  window.setTimeout(() => node.classList.remove(className), FLASH_MS);
}

/**
 * Scroll a notebook to a collaborator's cell and show their caret there.
 * `quiet` (following): no emphasis, and no scroll when they are in view.
 * Returns whether their cell is in the notebook.
 */
export async function jumpTo(
  panel: NotebookPanel,
  who: ICollaborator,
  quiet = false
): Promise<boolean> {
  const notebook = panel.content;
  const index = notebook.widgets.findIndex(
    cell => cell.model.sharedModel.getId() === who.cellId
  );
  if (!who.cellId || index < 0) {
    return false;
  }
  const cell = notebook.widgets[index];
  const caretSelector =
    who.caretClient === null
      ? null
      : `.kc-remote-caret[data-client="${who.caretClient}"]`;
  const scroller = notebook.outerNode;
  const caretNow = caretSelector
    ? cell.node.querySelector(caretSelector)
    : null;
  if (
    !quiet ||
    !isVisibleIn(caretNow ?? cell.node.firstElementChild ?? cell.node, scroller)
  ) {
    await notebook.scrollToItem(index, 'smart');
  }
  // The caret is drawn on the next frame after an awareness change.
  await new Promise(resolve => requestAnimationFrame(resolve));
  const caret = caretSelector ? cell.node.querySelector(caretSelector) : null;
  if (caret && !isVisibleIn(caret, scroller)) {
    caret.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  }
  if (!quiet) {
    (cell.node as HTMLElement).style.setProperty('--kc-color', who.color);
    flash(cell.node, 'kc-jump-target');
    if (caret) {
      flash(caret, 'kc-caret-flash');
    }
  }
  return true;
}

/** Keeps a notebook's view on one collaborator until the person scrolls. */
export class Follower {
  constructor(
    readonly panel: NotebookPanel,
    readonly presence: Presence
  ) {
    presence.changed.connect(this._onMove, this);
    presence.caretsChanged.connect(this._onMove, this);
    presence.provider.model.awareness.on('change', this._onAwareness);
    const node = panel.content.node;
    for (const type of ['wheel', 'touchmove'] as const) {
      node.addEventListener(type, this._onUserScroll, { passive: true });
    }
    node.addEventListener('keydown', this._onKey);
    node.addEventListener('pointerdown', this._onPointer);
    panel.disposed.connect(this.dispose, this);
  }

  /** Whom this view follows (a collaborator's key), or null. */
  get key(): string | null {
    return this._key;
  }

  /** Emitted when following starts or stops. */
  get changed(): ISignal<this, string | null> {
    return this._changed;
  }

  /** Follow a collaborator (another call with the same key stops). */
  toggle(key: string): void {
    if (this._key === key) {
      this.stop();
      return;
    }
    this._key = key;
    this._changed.emit(key);
    const who = this.presence.find(key);
    if (who) {
      void jumpTo(this.panel, who);
    }
  }

  stop(): void {
    if (this._key !== null) {
      this._key = null;
      this._changed.emit(null);
    }
  }

  dispose(): void {
    this.presence.provider.model.awareness.off('change', this._onAwareness);
    Signal.clearData(this);
  }

  private _onMove(): void {
    if (this._key === null || this._moving) {
      return;
    }
    const who = this.presence.find(this._key);
    if (!who) {
      this.stop(); // they left
      return;
    }
    this._moving = true;
    void jumpTo(this.panel, who, true).finally(() => {
      this._moving = false;
    });
  }

  /** Their caret moved (it is redrawn on the next frame). */
  private _onAwareness = (): void => {
    if (this._key !== null) {
      requestAnimationFrame(() => this._onMove());
    }
  };

  private _onUserScroll = (): void => this.stop();

  private _onKey = (event: KeyboardEvent): void => {
    if (
      ['PageUp', 'PageDown', 'Home', 'End', 'ArrowUp', 'ArrowDown'].includes(
        event.key
      )
    ) {
      this.stop();
    }
  };

  /** A drag of the notebook's scrollbar (a press on the scroller itself). */
  private _onPointer = (event: PointerEvent): void => {
    if (event.target === this.panel.content.outerNode) {
      this.stop();
    }
  };

  private _key: string | null = null;
  private _moving = false;
  private _changed = new Signal<this, string | null>(this);
}

/** What the collaborators' views need of a decorated notebook panel. */
export interface IPanelPresence {
  presence: Presence;
  follower: Follower;
}

const PANELS = new WeakMap<NotebookPanel, IPanelPresence>();
const panelAdded = new Signal<object, NotebookPanel>({});

/** Record a collaborative notebook panel's presence (for the collaborators
 * panel, which follows the current notebook). */
export function registerPanel(
  panel: NotebookPanel,
  presence: Presence
): IPanelPresence {
  const entry = { presence, follower: new Follower(panel, presence) };
  PANELS.set(panel, entry);
  panelAdded.emit(panel);
  return entry;
}

/** The icons of the people and agents in a notebook, in its toolbar: click one
 * to jump to them; the last button opens the collaborators panel. */
export class ToolbarUsers extends Widget {
  constructor(
    readonly panel: NotebookPanel,
    private readonly _entry: IPanelPresence,
    private readonly _showPanel: () => void
  ) {
    super();
    this.addClass('kc-toolbar-users');
    this.addClass('jp-Toolbar-item');
    this.node.setAttribute('role', 'group');
    this.node.setAttribute('aria-label', 'Collaborators in this notebook');
    this.node.addEventListener('click', this._onClick);
    _entry.presence.changed.connect(this.update, this);
    _entry.follower.changed.connect(this.update, this);
    panel.content.model?.cells.changed.connect(this.update, this);
    this.update();
  }

  /** How many icons are shown before "+N". */
  static maxShown = 5;

  protected onUpdateRequest(): void {
    const others = this._entry.presence.collaborators.filter(c => !c.self);
    const shown = others.slice(0, ToolbarUsers.maxShown);
    const content: Node[] = shown.map(who => {
      const button = document.createElement('button');
      button.className = 'kc-toolbar-user jp-ToolbarButtonComponent';
      button.dataset.key = who.key;
      button.dataset.kind = who.kind;
      const label = tooltip(who, cellNumber(this.panel, who.cellId));
      button.title = label;
      button.setAttribute('aria-label', label);
      if (this._entry.follower.key === who.key) {
        button.classList.add('kc-followed');
      }
      button.append(avatar(who));
      return button;
    });
    const more = document.createElement('button');
    more.className = 'kc-toolbar-collaborators jp-ToolbarButtonComponent';
    const hidden = others.length - shown.length;
    more.title =
      `Collaborators (${others.length + 1} here` +
      (hidden ? `, ${hidden} more not shown` : '') +
      ')';
    more.setAttribute('aria-label', more.title);
    more.append(usersIcon.element({ tag: 'span', className: 'kc-users-icon' }));
    if (hidden) {
      const count = document.createElement('span');
      count.className = 'kc-more';
      count.textContent = `+${hidden}`;
      more.append(count);
    }
    content.push(more);
    replaceContent(this.node, content);
  }

  private _onClick = (event: MouseEvent): void => {
    const target = event.target as Element;
    const user = target.closest('.kc-toolbar-user') as HTMLElement | null;
    if (user?.dataset.key) {
      const who = this._entry.presence.find(user.dataset.key);
      if (who) {
        void jumpTo(this.panel, who);
      }
    } else if (target.closest('.kc-toolbar-collaborators')) {
      this._showPanel();
    }
  };
}

/** The collaborators panel's section: everyone in the current notebook. */
export class CollaboratorsView extends Widget {
  constructor() {
    super();
    this.id = 'kc-collaborators';
    this.addClass('kc-collaborators');
    this.title.label = 'In this notebook';
    this.title.caption = 'Collaborators in this notebook';
    this._list = document.createElement('ul');
    this._list.className = 'kc-collaborator-list';
    this._list.setAttribute('aria-label', 'Collaborators in this notebook');
    this._empty = document.createElement('p');
    this._empty.className = 'kc-collaborators-empty';
    this.node.append(this._list, this._empty);
    this._list.addEventListener('click', this._onClick);
    this._list.addEventListener('keydown', this._onKey);
    panelAdded.connect((_, panel) => {
      if (panel === this._wanted) {
        this.setNotebook(panel);
      }
    });
    this.update();
  }

  /** Show the people of `panel` (the current notebook), or none. */
  setNotebook(panel: NotebookPanel | null): void {
    this._wanted = panel;
    const entry = panel ? PANELS.get(panel) : undefined;
    const next = entry && panel ? { panel, ...entry } : null;
    if (next?.panel === this._current?.panel) {
      this.update(); // what it says of a notebook that is not collaborative
      return;
    }
    if (this._current) {
      const { presence, follower, panel: old } = this._current;
      presence.changed.disconnect(this.update, this);
      follower.changed.disconnect(this.update, this);
      old.content.model?.cells.changed.disconnect(this.update, this);
    }
    this._current = next;
    if (next) {
      next.presence.changed.connect(this.update, this);
      next.follower.changed.connect(this.update, this);
      next.panel.content.model?.cells.changed.connect(this.update, this);
      next.panel.disposed.connect(() => {
        if (this._current?.panel === next.panel) {
          this.setNotebook(null);
        }
      });
    }
    this.update();
  }

  protected onUpdateRequest(): void {
    const current = this._current;
    if (!current || current.presence.isDisposed) {
      replaceContent(this._list, []);
      this._empty.textContent = this._wanted
        ? 'This notebook is not on a collaborative kernel.'
        : 'Open a notebook on a collaborative kernel to see who is in it.';
      return;
    }
    this._empty.textContent = '';
    const rows = current.presence.collaborators.map(who =>
      this._row(who, current.panel, current.follower.key === who.key)
    );
    replaceContent(this._list, rows);
  }

  private _row(
    who: ICollaborator,
    panel: NotebookPanel,
    followed: boolean
  ): HTMLElement {
    const row = document.createElement('li');
    row.className = 'kc-collaborator';
    row.dataset.key = who.key;
    row.dataset.kind = who.kind;
    row.tabIndex = 0;
    const number = cellNumber(panel, who.cellId);
    row.title = who.self ? tooltip(who, number) : `Go to ${who.name}`;
    const name = document.createElement('span');
    name.className = 'kc-collaborator-name';
    name.textContent = who.name;
    const detail = document.createElement('span');
    detail.className = 'kc-collaborator-detail';
    detail.textContent = describe(who);
    const words = document.createElement('span');
    words.className = 'kc-collaborator-text';
    words.append(name, detail);
    const role = document.createElement('span');
    role.className = 'kc-role';
    role.dataset.role = who.role;
    role.textContent = who.role;
    role.title = ROLE_TITLES[who.role] ?? 'role unknown';
    const cell = document.createElement('span');
    cell.className = 'kc-collaborator-cell';
    cell.textContent = number === null ? '' : `cell ${number}`;
    row.append(avatar(who), words, role, cell);
    if (!who.self) {
      const follow = document.createElement('button');
      follow.className = 'kc-follow jp-ToolbarButtonComponent';
      follow.setAttribute('aria-pressed', String(followed));
      follow.title = followed
        ? `Stop following ${who.name}`
        : `Follow ${who.name} (until you scroll)`;
      follow.setAttribute('aria-label', follow.title);
      follow.append(followIcon.element({ tag: 'span' }));
      row.append(follow);
    }
    if (followed) {
      row.classList.add('kc-followed');
    }
    return row;
  }

  private _activate(row: HTMLElement, follow: boolean): void {
    const current = this._current;
    const key = row.dataset.key;
    const who = key ? current?.presence.find(key) : undefined;
    if (!current || !who) {
      return;
    }
    if (follow) {
      current.follower.toggle(who.key);
    } else {
      void jumpTo(current.panel, who);
    }
  }

  private _onClick = (event: MouseEvent): void => {
    const target = event.target as Element;
    const row = target.closest('.kc-collaborator') as HTMLElement | null;
    if (row) {
      this._activate(row, !!target.closest('.kc-follow'));
    }
  };

  private _onKey = (event: KeyboardEvent): void => {
    const target = event.target as HTMLElement;
    if (
      (event.key === 'Enter' || event.key === ' ') &&
      target.classList.contains('kc-collaborator')
    ) {
      event.preventDefault();
      this._activate(target, false);
    }
  };

  private _list: HTMLUListElement;
  private _empty: HTMLParagraphElement;
  private _wanted: NotebookPanel | null = null;
  private _current: (IPanelPresence & { panel: NotebookPanel }) | null = null;
}
