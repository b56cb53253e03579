// A collaborative notebook's history: every version its sidecar stored, who
// made it (people, scripts, the kernel, edits to the file on disk, restores),
// a slider to step through them, the selected version read-only, what changed
// from it to now cell by cell, and, for people who may edit, restoring it.
//
// Versions hold what any peer wrote (sources, outputs, names, labels): text
// goes in as text nodes, never parsed as HTML; outputs go only through
// JupyterLab's rendermime, restricted to text and images, trusted as the
// version recorded them.
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { ServerConnection } from '@jupyterlab/services';
import { historyIcon } from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';
import {
  IAuthor,
  ICellChange,
  IHistoryDiff,
  IStoredCell,
  IStoredOutput,
  IVersion,
  IVersionContent,
  fetchDiff,
  fetchHistory,
  fetchVersion,
  restoreVersion
} from './requests';
import { Content, element } from './panel';

function button(className: string, label: string, title: string) {
  const node = element('button', `${className} jp-Button`, label);
  node.type = 'button';
  node.title = title;
  return node;
}

/** A multiline nbformat string (a string or a list of lines) as one string. */
function joined(value: unknown): string {
  if (Array.isArray(value)) {
    return value.map(part => String(part)).join('');
  }
  return typeof value === 'string' ? value : '';
}

function when(seconds: number): string {
  return Number.isFinite(seconds)
    ? new Date(seconds * 1000).toLocaleString()
    : '';
}

/** What kind of version it is, in words. */
const KINDS: Record<string, string> = {
  created: 'Opened',
  edit: 'Edited',
  save: 'Saved',
  restart: 'Kernel restarted',
  restore: 'Restored',
  outside: 'Changed on disk',
  purge: 'History purged'
};

function kindText(kind: string): string {
  return Object.prototype.hasOwnProperty.call(KINDS, kind) ? KINDS[kind] : kind;
}

/** Who an author is, in words: "Alice", "tidy-agent (script)", "the file on
 * disk". */
export function authorText(author: IAuthor): string {
  const name = typeof author.name === 'string' ? author.name : '';
  switch (author.kind) {
    case 'person':
      return name || author.username || 'someone';
    case 'script':
      return `${name || 'a script'} (script)`;
    case 'kernel':
      return name && name !== 'kernel' ? `${name} (kernel)` : 'the kernel';
    case 'disk':
      return 'the file on disk';
    case 'sidecar':
      return name || 'kernel_collab';
    default:
      return name || String(author.kind);
  }
}

function authorsNode(authors: IAuthor[]): HTMLElement {
  const node = element('span', 'kc-history-authors');
  (Array.isArray(authors) ? authors : []).forEach((author, i) => {
    if (i) {
      node.append(', ');
    }
    const mark = element('span', 'kc-history-author', authorText(author));
    mark.dataset.kind = String(author.kind);
    node.append(mark);
  });
  return node;
}

/** The MIME types the history shows outputs as: text and images. */
const SHOWN_TYPES = new Set([
  'text/plain',
  'application/vnd.jupyter.stdout',
  'application/vnd.jupyter.stderr',
  'image/png',
  'image/jpeg',
  'image/gif',
  'image/webp',
  'image/bmp'
]);

/** A copy of the page's rendermime that renders only `SHOWN_TYPES`. */
export function historyRendermime(
  rendermime: IRenderMimeRegistry
): IRenderMimeRegistry {
  const restricted = rendermime.clone();
  for (const mime of restricted.mimeTypes) {
    if (!SHOWN_TYPES.has(mime)) {
      restricted.removeMimeType(mime);
    }
  }
  return restricted;
}

/** An output's MIME bundle: streams and errors as JupyterLab shows them. */
function bundle(output: IStoredOutput): Record<string, unknown> | null {
  switch (output.output_type) {
    case 'stream':
      return {
        [output.name === 'stderr'
          ? 'application/vnd.jupyter.stderr'
          : 'application/vnd.jupyter.stdout']: joined(output.text)
      };
    case 'error': {
      const traceback = Array.isArray(output.traceback)
        ? output.traceback.map(line => String(line)).join('\n')
        : '';
      return {
        'application/vnd.jupyter.stderr':
          traceback || `${joined(output.ename)}: ${joined(output.evalue)}`
      };
    }
    case 'execute_result':
    case 'display_data': {
      const data = output.data;
      if (typeof data !== 'object' || data === null || Array.isArray(data)) {
        return null;
      }
      const out: Record<string, unknown> = {};
      for (const [mime, value] of Object.entries(data)) {
        out[mime] = Array.isArray(value) ? joined(value) : value;
      }
      return out;
    }
    default:
      return null;
  }
}

/** The lines of a unified diff, each in a span classed by what it is. */
function diffNode(diff: string): HTMLElement {
  const node = element('pre', 'kc-history-diff');
  for (const line of diff.split('\n')) {
    const kind = line.startsWith('@@')
      ? 'hunk'
      : line.startsWith('+')
        ? 'add'
        : line.startsWith('-')
          ? 'del'
          : 'context';
    node.append(element('span', `kc-diff-line kc-diff-${kind}`, line), '\n');
  }
  return node;
}

const STATUS_TEXT: Record<ICellChange['status'], string> = {
  added: 'added',
  removed: 'removed',
  moved: 'moved',
  modified: 'modified',
  unchanged: 'unchanged'
};

/** Where a changed cell was and is: "cell 2", "was cell 3", "cell 3 → 1". */
function whereText(change: ICellChange): string {
  const at = (index: number | null): string =>
    index === null ? '?' : String(index + 1);
  switch (change.status) {
    case 'added':
      return `now cell ${at(change.new_index)}`;
    case 'removed':
      return `was cell ${at(change.old_index)}`;
    case 'moved':
      return `cell ${at(change.old_index)} → ${at(change.new_index)}`;
    default:
      return `cell ${at(change.new_index)}`;
  }
}

/** The diff of the newest version against now. */
function noChange(version: number): IHistoryDiff {
  return { version, against: version, outputs_dropped: false, cells: [] };
}

/** What a view needs of the page it is in. */
export interface IHistoryOptions {
  /** The notebook's path now (it follows renames). */
  path: () => string;
  /** Whether this person may edit (only then may they restore). */
  canWrite: () => boolean;
  settings: ServerConnection.ISettings;
  rendermime: IRenderMimeRegistry;
  /** Subscribe to the notebook's changes; returns the unsubscribe. */
  onDocumentChange: (listener: () => void) => () => void;
}

/** How long after a change of the notebook the versions are listed again. */
const REFRESH_MS = 1000;
/** How long the slider rests before the version under it is loaded. */
const SLIDE_MS = 150;

/** One notebook's history view (see the module's comment). */
export class HistoryView extends Widget {
  constructor(private readonly _options: IHistoryOptions) {
    super();
    this.addClass('kc-history');
    this.title.icon = historyIcon;
    this.title.closable = true;
    this.node.tabIndex = -1;
    this._rendermime = historyRendermime(_options.rendermime);

    this._slider.type = 'range';
    this._slider.className = 'kc-history-slider';
    this._slider.min = '0';
    this._slider.setAttribute('aria-label', 'Version');
    this._slider.addEventListener('input', this._onSlide);
    this._older.addEventListener('click', () => this._step(-1));
    this._newer.addEventListener('click', () => this._step(1));
    this._restore.addEventListener('click', () => void this._onRestore());
    this._list.addEventListener('click', this._onListClick);
    this._list.setAttribute('role', 'listbox');
    this._list.setAttribute('aria-label', 'Versions');
    this._status.setAttribute('role', 'status');

    this.node.append(
      element(
        'div',
        'kc-history-header',
        this._title,
        element(
          'div',
          'kc-history-controls',
          this._older,
          this._slider,
          this._newer,
          this._position
        )
      ),
      this._status,
      element('div', 'kc-history-body', this._list, this._detail)
    );
    this._detail.append(
      element('div', 'kc-history-summary-row', this._summary, this._restore),
      element(
        'section',
        'kc-history-section',
        this._changesTitle,
        this._changes
      ),
      element(
        'section',
        'kc-history-section',
        element('h3', 'kc-history-heading', 'This version, read-only'),
        this._cells
      )
    );
    this._unsubscribe = _options.onDocumentChange(this._scheduleRefresh);
    this._updateTitle();
    void this.refresh();
  }

  /** The versions listed, oldest first. */
  get versions(): readonly IVersion[] {
    return this._versions;
  }

  /** The version shown (null before the list arrives). */
  get selected(): number | null {
    return this._selected;
  }

  /** List the versions again (and what changed since the one shown). */
  async refresh(): Promise<void> {
    this._refreshTimer = 0;
    if (this.isDisposed) {
      return;
    }
    if (!this.isVisible && this._loadedOnce) {
      this._stale = true;
      return;
    }
    this._stale = false;
    this._updateTitle();
    let versions: IVersion[];
    try {
      versions = await fetchHistory(this._options.settings, this._path());
    } catch (error) {
      this._showError('Could not list the versions', error);
      return;
    }
    if (this.isDisposed) {
      return;
    }
    this._loadedOnce = true;
    const wasNewest = this._following;
    this._versions = versions;
    const known = versions.some(v => v.version === this._selected);
    const target =
      wasNewest || !known
        ? (versions[versions.length - 1]?.version ?? null)
        : this._selected;
    this._renderList();
    if (target === null) {
      this._selected = null;
      this._renderEmpty();
      return;
    }
    await this.select(target);
  }

  /** Show a version: its notebook, and what changed from it to now. */
  async select(version: number): Promise<void> {
    const index = this._versions.findIndex(v => v.version === version);
    if (index < 0) {
      return;
    }
    this._selected = version;
    this._following = index === this._versions.length - 1;
    this._markSelected(index);
    this._detail.setAttribute('aria-busy', 'true');
    const ticket = ++this._ticket;
    const path = this._path();
    try {
      // The newest version is the notebook now: nothing changed since.
      const newest = this._following;
      const [content, diff] = await Promise.all([
        this._content(path, version),
        newest
          ? Promise.resolve(noChange(version))
          : fetchDiff(this._options.settings, path, version)
      ]);
      if (ticket !== this._ticket || this.isDisposed) {
        return; // another version was asked for meanwhile
      }
      if (this._status.dataset.kind === 'error') {
        this._status.textContent = '';
        this._status.dataset.kind = '';
      }
      await this._renderVersion(content, diff);
      if (ticket === this._ticket) {
        this._detail.dataset.version = String(version);
      }
    } catch (error) {
      if (ticket === this._ticket) {
        this._showError(`Could not show version ${version}`, error);
      }
    } finally {
      if (ticket === this._ticket) {
        this._detail.setAttribute('aria-busy', 'false');
      }
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._unsubscribe();
    window.clearTimeout(this._refreshTimer);
    window.clearTimeout(this._slideTimer);
    this._disposeRenderers();
    super.dispose();
  }

  protected onAfterShow(): void {
    if (this._stale) {
      void this.refresh();
    }
  }

  protected onActivateRequest(): void {
    if (this._slider.isConnected && !this._slider.disabled) {
      this._slider.focus();
    } else {
      this.node.focus();
    }
  }

  /** Closing the view disposes it (opening it again makes a new one). */
  protected onCloseRequest(): void {
    this.dispose();
  }

  private _path(): string {
    return this._options.path();
  }

  private _updateTitle(): void {
    const name = this._path().split('/').pop() ?? this._path();
    this.title.label = `History: ${name}`;
    this.title.caption = `Earlier versions of ${this._path()}`;
    this._title.textContent = `History of ${name}`;
    this._title.title = this._path();
  }

  private async _content(
    path: string,
    version: number
  ): Promise<IVersionContent> {
    const cached = this._contents.get(version);
    if (cached) {
      return cached;
    }
    const content = await fetchVersion(this._options.settings, path, version);
    this._contents.set(version, content);
    if (this._contents.size > 20) {
      // A stored version never changes: keep the last few asked for.
      this._contents.delete(this._contents.keys().next().value as number);
    }
    return content;
  }

  private _renderList(): void {
    const versions = this._versions;
    this._slider.max = String(Math.max(0, versions.length - 1));
    this._slider.disabled = versions.length < 2;
    const items = versions
      .map((v, index) => {
        const item = element(
          'li',
          'kc-history-version',
          element('span', 'kc-history-when', when(v.at)),
          element('span', 'kc-history-kind', kindText(v.kind)),
          authorsNode(v.authors)
        );
        if (v.label) {
          item.append(element('span', 'kc-history-label', v.label));
        }
        if (v.outputs_dropped) {
          item.append(
            element('span', 'kc-history-dropped', 'outputs not kept')
          );
        }
        item.dataset.version = String(v.version);
        item.dataset.index = String(index);
        item.dataset.kind = String(v.kind);
        item.setAttribute('role', 'option');
        item.title = `Version ${v.version}: ${kindText(v.kind)} at ${when(v.at)}`;
        if (v.pinned) {
          item.classList.add('kc-history-pinned');
        }
        return item;
      })
      .reverse(); // newest first
    this._list.replaceChildren(...items);
  }

  private _renderEmpty(): void {
    this._position.textContent = 'No version stored yet';
    this._summary.replaceChildren();
    this._changes.replaceChildren();
    this._cells.replaceChildren();
    this._restore.hidden = true;
  }

  private _markSelected(index: number): void {
    this._slider.value = String(index);
    const version = this._versions[index];
    const newest = index === this._versions.length - 1;
    this._position.textContent =
      `Version ${index + 1} of ${this._versions.length}` +
      (newest ? ' (now)' : '');
    this._older.disabled = index <= 0;
    this._newer.disabled = newest;
    for (const item of Array.from(this._list.children)) {
      const selected = (item as HTMLElement).dataset.index === String(index);
      item.classList.toggle('kc-mod-selected', selected);
      item.setAttribute('aria-selected', String(selected));
      if (selected) {
        item.scrollIntoView?.({ block: 'nearest' });
      }
    }
    const by: Content[] = version.authors?.length
      ? [' by ', authorsNode(version.authors)]
      : [];
    this._summary.replaceChildren(
      element('span', 'kc-history-kind', kindText(version.kind)),
      ...by,
      element('span', 'kc-history-when', ` at ${when(version.at)}`)
    );
    if (version.label) {
      this._summary.append(
        element('span', 'kc-history-label', ` (${version.label})`)
      );
    }
    // Only people who may edit restore; the newest version is the notebook.
    this._restore.hidden = !this._options.canWrite();
    this._restore.disabled = newest;
    this._restore.title = newest
      ? 'This version is the notebook as it is now'
      : 'Make the notebook this version again, for everyone ' +
        '(a new version: nothing is lost)';
  }

  private async _renderVersion(
    content: IVersionContent,
    diff: IHistoryDiff
  ): Promise<void> {
    const index = this._versions.findIndex(v => v.version === content.version);
    const newest = index === this._versions.length - 1;
    this._changesTitle.textContent = newest
      ? 'This version is the notebook as it is now'
      : `What changed from version ${index + 1} to now`;
    this._renderChanges(diff, newest);
    const changeByIndex = new Map<number, ICellChange>();
    for (const change of diff.cells) {
      if (change.old_index !== null) {
        changeByIndex.set(change.old_index, change);
      }
    }
    const trusted = new Set(
      Array.isArray(content.trusted) ? content.trusted : []
    );
    const cells = Array.isArray(content.notebook?.cells)
      ? content.notebook.cells
      : [];
    this._disposeRenderers();
    const nodes: HTMLElement[] = [];
    const pending: Promise<void>[] = [];
    cells.forEach((cell: IStoredCell, i: number) => {
      const id = typeof cell.id === 'string' ? cell.id : '';
      const type = typeof cell.cell_type === 'string' ? cell.cell_type : '';
      const count =
        typeof cell.execution_count === 'number'
          ? ` [${cell.execution_count}]`
          : '';
      const node = element(
        'div',
        'kc-history-cell',
        element('div', 'kc-history-cell-head', `${i + 1} · ${type}${count}`),
        element('pre', 'kc-history-source', joined(cell.source))
      );
      node.dataset.cellId = id;
      node.dataset.cellType = type;
      const change = changeByIndex.get(i);
      node.dataset.change = change && !newest ? change.status : 'unchanged';
      if (type === 'code' && Array.isArray(cell.outputs)) {
        if (content.outputs_dropped) {
          node.append(
            element(
              'div',
              'kc-history-note',
              'The outputs of this version were not kept.'
            )
          );
        } else if (cell.outputs.length) {
          const outputs = element('div', 'kc-history-outputs');
          node.append(outputs);
          for (const output of cell.outputs) {
            const host = element('div', 'kc-history-output');
            outputs.append(host);
            pending.push(this._renderOutput(host, output, trusted.has(id)));
          }
        }
      }
      nodes.push(node);
    });
    if (!nodes.length) {
      nodes.push(element('p', 'kc-history-note', 'This version has no cell.'));
    }
    this._cells.replaceChildren(...nodes);
    await Promise.all(pending);
  }

  private _renderChanges(diff: IHistoryDiff, newest: boolean): void {
    const cells = Array.isArray(diff.cells) ? diff.cells : [];
    const changed = cells.filter(c => c.status !== 'unchanged');
    const unchanged = cells.length - changed.length;
    const nodes: HTMLElement[] = [];
    if (newest) {
      this._changes.replaceChildren();
      return;
    }
    if (!changed.length) {
      nodes.push(
        element('p', 'kc-history-note', 'Nothing changed since this version.')
      );
    } else {
      const list = element('ol', 'kc-history-changes');
      for (const change of changed) {
        const what: string[] = [];
        if (change.source_changed) {
          what.push('source');
        }
        if (change.outputs_changed) {
          what.push('outputs');
        }
        const item = element(
          'li',
          'kc-history-change',
          element(
            'span',
            'kc-history-change-status',
            STATUS_TEXT[change.status] ?? String(change.status)
          ),
          element('span', 'kc-history-change-where', whereText(change))
        );
        if (what.length && change.status !== 'added') {
          item.append(
            element(
              'span',
              'kc-history-change-what',
              `${what.join(' and ')} changed`
            )
          );
        }
        item.dataset.status = String(change.status);
        item.dataset.cellId = change.id ?? '';
        if (typeof change.source_diff === 'string' && change.source_diff) {
          item.append(diffNode(change.source_diff));
        }
        list.append(item);
      }
      nodes.push(list);
    }
    if (unchanged) {
      nodes.push(
        element(
          'p',
          'kc-history-note',
          `${unchanged} cell${unchanged === 1 ? '' : 's'} unchanged.`
        )
      );
    }
    if (diff.outputs_dropped) {
      nodes.push(
        element(
          'p',
          'kc-history-note',
          'Outputs are not compared: one of the versions did not keep them.'
        )
      );
    }
    this._changes.replaceChildren(...nodes);
  }

  private async _renderOutput(
    host: HTMLElement,
    output: IStoredOutput,
    trusted: boolean
  ): Promise<void> {
    const data = bundle(output);
    const mime = data
      ? this._rendermime.preferredMimeType(
          data as ReadonlyPartialJSONObject,
          trusted ? 'any' : 'ensure'
        )
      : undefined;
    if (!data || !mime) {
      const kinds = data ? Object.keys(data).join(', ') : output.output_type;
      host.append(
        element(
          'div',
          'kc-history-note',
          `An output (${kinds}) that the history does not show.`
        )
      );
      return;
    }
    const renderer = this._rendermime.createRenderer(mime);
    this._renderers.push(renderer);
    const metadata =
      typeof output.metadata === 'object' && output.metadata !== null
        ? (output.metadata as ReadonlyPartialJSONObject)
        : {};
    await renderer.renderModel(
      new MimeModel({
        data: data as ReadonlyPartialJSONObject,
        metadata,
        trusted
      })
    );
    if (!renderer.isDisposed) {
      host.append(renderer.node);
    }
  }

  private _disposeRenderers(): void {
    for (const renderer of this._renderers) {
      renderer.dispose();
    }
    this._renderers = [];
  }

  private _showError(what: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    this._status.textContent = `${what}: ${message}`;
    this._status.dataset.kind = 'error';
  }

  private _step(by: number): void {
    const index = this._versions.findIndex(v => v.version === this._selected);
    const next = this._versions[index + by];
    if (next) {
      void this.select(next.version);
    }
  }

  private _onSlide = (): void => {
    const index = Number(this._slider.value);
    const version = this._versions[index];
    if (!version) {
      return;
    }
    this._selected = version.version;
    this._following = index === this._versions.length - 1;
    this._markSelected(index);
    this._detail.setAttribute('aria-busy', 'true');
    window.clearTimeout(this._slideTimer);
    this._slideTimer = window.setTimeout(() => {
      void this.select(version.version);
    }, SLIDE_MS);
  };

  private _onListClick = (event: MouseEvent): void => {
    const item = (event.target as Element).closest(
      '.kc-history-version'
    ) as HTMLElement | null;
    if (item?.dataset.version) {
      void this.select(Number(item.dataset.version));
    }
  };

  private _scheduleRefresh = (): void => {
    if (!this._refreshTimer && !this.isDisposed) {
      this._refreshTimer = window.setTimeout(
        () => void this.refresh(),
        REFRESH_MS
      );
    }
  };

  private async _onRestore(): Promise<void> {
    const version = this._selected;
    const index = this._versions.findIndex(v => v.version === version);
    if (version === null || index < 0) {
      return;
    }
    const answer = await showDialog({
      title: `Restore version ${index + 1}?`,
      body:
        'Everyone in this notebook sees its cells become those of this ' +
        'version. The restore is a new version: nothing is lost.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Restore' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await restoreVersion(this._options.settings, this._path(), version);
      this._following = true;
      await this.refresh();
      this._status.textContent = `Version ${index + 1} was restored.`;
      this._status.dataset.kind = 'info';
    } catch (error) {
      this._showError('Could not restore', error);
    }
  }

  private _rendermime: IRenderMimeRegistry;
  private _unsubscribe: () => void;
  private _versions: IVersion[] = [];
  private _contents = new Map<number, IVersionContent>();
  private _selected: number | null = null;
  private _following = true;
  private _ticket = 0;
  private _loadedOnce = false;
  private _stale = false;
  private _refreshTimer = 0;
  private _slideTimer = 0;
  private _renderers: Widget[] = [];
  private _title = element('h2', 'kc-history-title');
  private _slider = document.createElement('input');
  private _older = button('kc-history-older', '‹', 'Older version');
  private _newer = button('kc-history-newer', '›', 'Newer version');
  private _position = element('span', 'kc-history-position');
  private _status = element('div', 'kc-history-status');
  private _list = element('ol', 'kc-history-versions');
  private _summary = element('div', 'kc-history-summary');
  private _restore = button(
    'kc-history-restore jp-mod-styled jp-mod-warn',
    'Restore this version',
    ''
  );
  private _changesTitle = element('h3', 'kc-history-heading');
  private _changes = element('div', 'kc-history-changes-body');
  private _cells = element('div', 'kc-history-cells');
  private _detail = element('div', 'kc-history-detail');
}
