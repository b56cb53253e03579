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
import { personName, safeColor } from './state';

interface ICursor {
  anchor: unknown;
  head: unknown;
  primary?: boolean;
  empty?: boolean;
}

/** A collaborator as drawn: their name (shown as text) and their colour
 * (checked by `safeColor`: awareness is written by peers, so both may hold
 * anything). */
interface IRemote {
  name: string;
  color: string;
}

class CaretWidget extends WidgetType {
  constructor(readonly person: IRemote) {
    super();
  }

  eq(other: CaretWidget): boolean {
    return (
      other.person.name === this.person.name &&
      other.person.color === this.person.color
    );
  }

  toDOM(): HTMLElement {
    const caret = document.createElement('span');
    caret.className = 'kc-remote-caret';
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
            const person: IRemote = {
              name: personName(state.user, 'Anonymous'),
              color: safeColor(state.user.color)
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
                  widget: new CaretWidget(person),
                  side: 1
                })
              });
            }
          });
        }
        return Decoration.set(
          marks.map(m => m.decoration.range(m.from, m.to)),
          true
        );
      }

      private _scheduled = false;
      private _publishing = false;
    },
    { decorations: plugin => plugin.decorations }
  );
}
