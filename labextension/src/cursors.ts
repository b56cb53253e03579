// Collaborators' carets and selections in cell editors, named and coloured,
// through the shared awareness (`user` and `cursors` with Yjs relative
// positions: the convention jupyter-collaboration's clients use, so both kinds
// of client see each other).
import { Extension } from '@codemirror/state';
import {
  Decoration,
  DecorationSet,
  EditorView,
  ViewPlugin,
  ViewUpdate,
  WidgetType
} from '@codemirror/view';
import * as Y from 'yjs';
import type { Awareness } from 'y-protocols/awareness';
import { Presence } from './presence';
import { personName, safeColor } from './state';

interface ICursor {
  anchor: unknown;
  head: unknown;
  primary?: boolean;
  empty?: boolean;
}

/** A collaborator as drawn: their name (shown as text) and their colour
 * (checked by `safeColor`: awareness is written by peers, so both may hold
 * anything), their awareness client id, and whether they are an agent (a
 * script or the kernel, whose caret is where it last typed). */
interface IRemote {
  name: string;
  color: string;
  clientId: number;
  agent: boolean;
  /** On the editor's first line: the name goes beside the caret, not above
   * it (the editor clips what is above its first line). */
  firstLine: boolean;
}

class CaretWidget extends WidgetType {
  constructor(readonly person: IRemote) {
    super();
  }

  eq(other: CaretWidget): boolean {
    return (
      other.person.name === this.person.name &&
      other.person.color === this.person.color &&
      other.person.clientId === this.person.clientId &&
      other.person.agent === this.person.agent &&
      other.person.firstLine === this.person.firstLine
    );
  }

  toDOM(): HTMLElement {
    const caret = document.createElement('span');
    caret.className = 'kc-remote-caret';
    if (this.person.agent) {
      caret.classList.add('kc-agent-caret');
    }
    if (this.person.firstLine) {
      caret.classList.add('kc-remote-caret-first-line');
    }
    caret.dataset.client = String(this.person.clientId);
    caret.style.borderLeftColor = this.person.color;
    const label = document.createElement('span');
    label.className = 'kc-remote-caret-name';
    label.style.backgroundColor = this.person.color;
    label.textContent = this.person.name;
    caret.appendChild(label);
    return caret;
  }

  ignoreEvent(): boolean {
    return true;
  }
}

/** Where a position from awareness (a Yjs relative position as JSON) is now,
 * if anywhere. */
function resolve(position: unknown, doc: Y.Doc): Y.AbsolutePosition | null {
  try {
    const relative = Y.createRelativePositionFromJSON(position);
    return Y.createAbsolutePositionFromRelativePosition(relative, doc);
  } catch {
    return null;
  }
}

function absolute(position: unknown, doc: Y.Doc, text: Y.Text): number | null {
  const resolved = resolve(position, doc);
  return resolved && resolved.type === text ? resolved.index : null;
}

/** A cell editor's carets, as the hub sees it. */
interface ICaretView {
  /** Draw the carets again, now. */
  redraw(): void;
}

/** Awareness changes: the clients that came, changed or left. */
interface IAwarenessChange {
  added: number[];
  updated: number[];
  removed: number[];
}

/**
 * The carets of one notebook (one awareness), for all of its cell editors: it
 * listens once to the awareness and to the presence (agents' carets), and
 * redraws, once a frame, only the editors a change concerns: those showing a
 * collaborator who changed or left (what they drew), and those of the texts
 * where that collaborator's carets are now. A notebook of 1,000 cells has
 * 1,000 editors; someone typing changes one or two of them.
 */
class CaretHub {
  /** The hub of a notebook's awareness (made once). */
  static of(awareness: Awareness): CaretHub {
    let hub = HUBS.get(awareness);
    if (!hub) {
      hub = new CaretHub(awareness);
      HUBS.set(awareness, hub);
    }
    return hub;
  }

  private constructor(readonly awareness: Awareness) {}

  /** An editor of `text` is open: tell it when its carets change. */
  add(text: Y.Text, view: ICaretView): void {
    if (!this._views.size) {
      this.awareness.on('change', this._onAwareness);
    }
    let views = this._views.get(text);
    if (!views) {
      views = new Set();
      this._views.set(text, views);
    }
    views.add(view);
    this._doc ??= text.doc;
  }

  /** The editor is gone. */
  remove(text: Y.Text, view: ICaretView): void {
    const views = this._views.get(text);
    views?.delete(view);
    if (views && !views.size) {
      this._views.delete(text);
    }
    this.shown(view, NOBODY);
    this._dirty.delete(view);
    if (!this._views.size) {
      this.awareness.off('change', this._onAwareness);
      this._presence?.caretsChanged.disconnect(this._onCarets, this);
      this._presence = undefined;
      this._doc = null;
    }
  }

  /** What an editor has drawn: the carets of these clients (awareness ids). */
  shown(view: ICaretView, clients: ReadonlySet<number>): void {
    const before = this._shownBy.get(view) ?? NOBODY;
    for (const clientId of before) {
      if (!clients.has(clientId)) {
        const views = this._showing.get(clientId);
        views?.delete(view);
        if (views && !views.size) {
          this._showing.delete(clientId);
        }
      }
    }
    for (const clientId of clients) {
      if (!before.has(clientId)) {
        let views = this._showing.get(clientId);
        if (!views) {
          views = new Set();
          this._showing.set(clientId, views);
        }
        views.add(view);
      }
    }
    if (clients.size) {
      this._shownBy.set(view, clients);
    } else {
      this._shownBy.delete(view);
    }
  }

  /** The notebook's presence, once there is one (it is made when the
   * notebook's panel is decorated, maybe after its editors). */
  presence(doc: Y.Doc): Presence | undefined {
    this._doc ??= doc;
    if (this._presence?.isDisposed) {
      this._presence = undefined;
    }
    if (!this._presence && this._views.size) {
      this._presence = Presence.of(this._doc);
      this._presence?.caretsChanged.connect(this._onCarets, this);
    }
    return this._presence;
  }

  private _onAwareness = ({ added, updated, removed }: IAwarenessChange) => {
    const states = this.awareness.getStates();
    const doc = this._doc;
    const presence = doc ? this.presence(doc) : undefined;
    for (const clientIds of [added, updated, removed]) {
      for (const clientId of clientIds) {
        if (clientId === this.awareness.clientID) {
          continue; // this page's own carets are not drawn
        }
        // Where they were drawn (a caret that leaves a cell goes from it) …
        this._showing.get(clientId)?.forEach(view => this._schedule(view));
        // … and where they are now (a caret is drawn at its head).
        const cursors = states.get(clientId)?.cursors;
        if (doc && Array.isArray(cursors)) {
          for (const cursor of cursors as ICursor[]) {
            if (typeof cursor === 'object' && cursor !== null) {
              this._scheduleText(resolve(cursor.head, doc)?.type);
            }
          }
        }
        // An agent's caret is drawn or not, named and coloured, by its state.
        this._scheduleText(presence?.caretSource(clientId));
      }
    }
  };

  /** Agents' carets moved: the texts they left and came to. */
  private _onCarets(_: Presence, texts: ReadonlySet<Y.Text>): void {
    texts.forEach(text => this._scheduleText(text));
  }

  private _scheduleText(text: Y.AbstractType<any> | null | undefined): void {
    const views = text ? this._views.get(text as Y.Text) : undefined;
    views?.forEach(view => this._schedule(view));
  }

  /** Redraw on the next frame, with the latest states (several changes → one
   * redraw of each editor they concern). */
  private _schedule(view: ICaretView): void {
    this._dirty.add(view);
    if (!this._frame) {
      this._frame = requestAnimationFrame(this._redraw);
    }
  }

  private _redraw = (): void => {
    this._frame = 0;
    const views = [...this._dirty];
    this._dirty.clear();
    for (const view of views) {
      try {
        view.redraw();
      } catch (error) {
        console.error('kernel_collab: drawing carets', error);
      }
    }
  };

  private _doc: Y.Doc | null = null;
  private _presence: Presence | undefined;
  /** The editors of each text. */
  private _views = new Map<Y.Text, Set<ICaretView>>();
  /** The editors showing each client's carets, and what each editor shows. */
  private _showing = new Map<number, Set<ICaretView>>();
  private _shownBy = new Map<ICaretView, ReadonlySet<number>>();
  private _dirty = new Set<ICaretView>();
  private _frame = 0;
}

const HUBS = new WeakMap<Awareness, CaretHub>();
const NOBODY: ReadonlySet<number> = new Set();

/** The extension for one cell editor bound to `text` in a collaborative
 * notebook. */
export function remoteCursors(text: Y.Text, awareness: Awareness): Extension {
  return ViewPlugin.fromClass(
    class implements ICaretView {
      decorations: DecorationSet;

      constructor(readonly view: EditorView) {
        this._hub.add(text, this);
        this.decorations = this._build();
      }

      update(update: ViewUpdate): void {
        if (
          update.view.hasFocus &&
          (update.selectionSet || update.focusChanged)
        ) {
          // After the frame: the keystroke's document update leaves first, and
          // a burst of selection changes is one awareness message.
          if (!this._publishing) {
            this._publishing = true;
            requestAnimationFrame(() => {
              this._publishing = false;
              if (this.view.hasFocus) {
                this._publish(this.view);
              }
            });
          }
        }
        this.decorations = this._build();
      }

      destroy(): void {
        this._hub.remove(text, this);
      }

      /** The hub says the carets changed: an empty transaction has `update`
       * draw them again. */
      redraw(): void {
        this.view.dispatch({});
      }

      private _publish(view: EditorView): void {
        const cursors = view.state.selection.ranges.map(range => ({
          anchor: Y.createRelativePositionFromTypeIndex(text, range.anchor),
          head: Y.createRelativePositionFromTypeIndex(text, range.head),
          primary: range.eq(view.state.selection.main),
          empty: range.empty
        }));
        // Typing before the caret leaves its relative position as it was: say
        // nothing then (each awareness message goes through the sidecar to
        // every page in the notebook, once per keystroke).
        const published = awareness.getLocalState()?.cursors;
        if (
          published !== undefined &&
          JSON.stringify(published) === JSON.stringify(cursors)
        ) {
          return;
        }
        awareness.setLocalStateField('cursors', cursors);
      }

      private _build(): DecorationSet {
        const doc = text.doc;
        const length = this.view.state.doc.length;
        const marks: { from: number; to: number; decoration: Decoration }[] =
          [];
        const shown = new Set<number>(); // whose carets
        if (doc) {
          awareness.getStates().forEach((state, clientId) => {
            if (
              clientId === awareness.clientID ||
              !state.user ||
              !Array.isArray(state.cursors)
            ) {
              return;
            }
            const person = {
              name: personName(state.user, 'Anonymous'),
              color: safeColor(state.user.color),
              clientId,
              agent: false
            };
            for (const cursor of state.cursors as ICursor[]) {
              if (typeof cursor !== 'object' || cursor === null) {
                continue;
              }
              const anchor = absolute(cursor.anchor, doc, text);
              const head = absolute(cursor.head, doc, text);
              if (
                anchor === null ||
                head === null ||
                head > length ||
                anchor > length
              ) {
                continue;
              }
              const [from, to] =
                anchor < head ? [anchor, head] : [head, anchor];
              if (from < to) {
                marks.push({
                  from,
                  to,
                  decoration: Decoration.mark({
                    class: 'kc-remote-selection',
                    // A CodeMirror mark takes its style as text: the colour is
                    // checked.
                    attributes: {
                      style: `background-color: ${person.color}; opacity: 0.8`
                    }
                  })
                });
              }
              marks.push({
                from: head,
                to: head,
                decoration: Decoration.widget({
                  widget: new CaretWidget({
                    ...person,
                    firstLine: this._onFirstLine(head)
                  }),
                  side: 1
                })
              });
              shown.add(clientId);
            }
          });
          // Scripts and the kernel share no caret: theirs is where they last
          // typed (the notebook's presence follows their edits).
          const presence = this._hub.presence(doc);
          for (const caret of presence?.caretsIn(text) ?? []) {
            if (caret.index > length) {
              continue;
            }
            const person: IRemote = {
              name: caret.name,
              color: caret.color,
              clientId: caret.clientId,
              agent: true,
              firstLine: this._onFirstLine(caret.index)
            };
            marks.push({
              from: caret.index,
              to: caret.index,
              decoration: Decoration.widget({
                widget: new CaretWidget(person),
                side: 1
              })
            });
            shown.add(caret.clientId);
          }
        }
        this._hub.shown(this, shown);
        return Decoration.set(
          marks.map(m => m.decoration.range(m.from, m.to)),
          true
        );
      }

      private _onFirstLine(position: number): boolean {
        return this.view.state.doc.lineAt(position).number === 1;
      }

      private _hub = CaretHub.of(awareness);
      private _publishing = false;
    },
    { decorations: plugin => plugin.decorations }
  );
}
