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

function absolute(position: unknown, doc: Y.Doc, text: Y.Text): number | null {
  try {
    const relative = Y.createRelativePositionFromJSON(position);
    const resolved = Y.createAbsolutePositionFromRelativePosition(
      relative,
      doc
    );
    return resolved && resolved.type === text ? resolved.index : null;
  } catch {
    return null;
  }
}

/** The extension for one cell editor bound to `text` in a collaborative
 * notebook. */
export function remoteCursors(text: Y.Text, awareness: Awareness): Extension {
  return ViewPlugin.fromClass(
    class {
      decorations: DecorationSet;

      constructor(readonly view: EditorView) {
        this.decorations = this._build();
        awareness.on('change', this._onAwareness);
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
        awareness.off('change', this._onAwareness);
        this._presence?.caretsChanged.disconnect(this._onAwareness);
      }

      private _onAwareness = (): void => {
        // Redraw on the next frame with the latest states (several changes →
        // one redraw).
        if (!this._scheduled) {
          this._scheduled = true;
          requestAnimationFrame(() => {
            this._scheduled = false;
            this.decorations = this._build();
            this.view.dispatch({});
          });
        }
      };

      private _publish(view: EditorView): void {
        const cursors = view.state.selection.ranges.map(range => ({
          anchor: Y.createRelativePositionFromTypeIndex(text, range.anchor),
          head: Y.createRelativePositionFromTypeIndex(text, range.head),
          primary: range.eq(view.state.selection.main),
          empty: range.empty
        }));
        awareness.setLocalStateField('cursors', cursors);
      }

      private _build(): DecorationSet {
        const doc = text.doc;
        const length = this.view.state.doc.length;
        const marks: { from: number; to: number; decoration: Decoration }[] =
          [];
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
            }
          });
          // Scripts and the kernel share no caret: theirs is where they last
          // typed (the notebook's presence follows their edits).
          const presence = this._presenceOf(doc);
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
          }
        }
        return Decoration.set(
          marks.map(m => m.decoration.range(m.from, m.to)),
          true
        );
      }

      /** The notebook's presence, once there is one (it is made when the
       * notebook's panel is decorated, maybe after this editor). */
      private _presenceOf(doc: Y.Doc): Presence | undefined {
        if (!this._presence) {
          this._presence = Presence.of(doc);
          this._presence?.caretsChanged.connect(this._onAwareness);
        }
        return this._presence;
      }

      private _onFirstLine(position: number): boolean {
        return this.view.state.doc.lineAt(position).number === 1;
      }

      private _presence: Presence | undefined;
      private _scheduled = false;
      private _publishing = false;
    },
    { decorations: plugin => plugin.decorations }
  );
}
