// Output trust as the sidecar records it: a cell's outputs render trusted in
// this page only when the sidecar vouches for them
// (`state.kernel_collab.trusted` has the cell) and this person may run code.
// Cell models start untrusted (the sidecar keeps `metadata.trusted` out of the
// document); trust is lowered before a change renders and raised only after it
// has been applied.
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import type * as Y from 'yjs';
import { setCellTrust } from './hostpatches';
import { CollabProvider } from './provider';

/** The sidecar's trust record of a notebook (a Y map from cell id to a digest),
 * if any. */
function trustRecord(provider: CollabProvider): Y.Map<unknown> | undefined {
  const state = provider.model.ystate.get('kernel_collab') as
    Y.Map<unknown> | undefined;
  const record = state?.get?.('trusted') as Y.Map<unknown> | undefined;
  return record && typeof record.has === 'function' ? record : undefined;
}

/** Whether this page may render `model`'s outputs trusted. */
export function trustedHere(
  provider: CollabProvider,
  model: ICodeCellModel
): boolean {
  if (!provider.canExecute) {
    // Readers and editors who may not run see everything untrusted.
    return false;
  }
  // JupyterLab marks cells pasted from the system clipboard untrusted: honour
  // it.
  if (model.sharedModel.getMetadata('trusted') === false) {
    return false;
  }
  return trustRecord(provider)?.has(model.sharedModel.getId()) ?? false;
}

/** Give a cell model the trust the record gives it here (before its widget
 * renders). */
export function alignCell(
  provider: CollabProvider,
  model: ICodeCellModel
): void {
  setCellTrust(model, trustedHere(provider, model));
}

/** Keep a panel's cells at the trust the record gives them, as the document
 * changes. */
export function followTrust(
  panel: NotebookPanel,
  provider: CollabProvider
): () => void {
  const codeCells = (): ICodeCellModel[] =>
    panel.content.widgets
      .map(cell => cell.model)
      .filter((model): model is ICodeCellModel => model.type === 'code');
  const ycells = provider.model.ydoc.getArray('cells');
  const changed = (tr: Y.Transaction, type: unknown): boolean => {
    const key = type as Y.AbstractType<any>;
    return tr.changed.has(key) || tr.changedParentTypes.has(key);
  };
  // The record changed, or cells were inserted (a moved cell gets a new model).
  const touches = (tr: Y.Transaction): boolean => {
    const record = trustRecord(provider);
    return (
      changed(tr, record ?? provider.model.ystate) || tr.changed.has(ycells)
    );
  };
  // Before the change reaches the cell models: drop trust the record no longer
  // gives, so outputs arriving in the same change never render trusted.
  const lower = (tr: Y.Transaction): void => {
    if (!touches(tr)) {
      return;
    }
    for (const model of codeCells()) {
      if (model.trusted && !trustedHere(provider, model)) {
        setCellTrust(model, false);
      }
    }
  };
  // After it: give the trust the record gives.
  const raise = (tr: Y.Transaction): void => {
    if (!touches(tr)) {
      return;
    }
    for (const model of codeCells()) {
      alignCell(provider, model);
    }
  };
  const ydoc = provider.model.ydoc;
  ydoc.on('beforeObserverCalls', lower);
  ydoc.on('afterTransaction', raise);
  for (const model of codeCells()) {
    alignCell(provider, model);
  }
  return () => {
    ydoc.off('beforeObserverCalls', lower);
    ydoc.off('afterTransaction', raise);
  };
}

/** "Trust Notebook" on a collaborative notebook: the sidecar records it for
 * everyone. */
export async function trustNotebook(
  provider: CollabProvider
): Promise<{ trusted: boolean }> {
  if (!provider.canExecute) {
    await showDialog({
      title: 'Cannot trust this notebook',
      body:
        'Only people who may run code in this notebook can trust its ' +
        'outputs.',
      buttons: [Dialog.okButton()]
    });
    return { trusted: false };
  }
  const answer = await showDialog({
    title: "Trust this notebook's outputs?",
    body:
      'Its HTML and JavaScript outputs will run, for everyone who may run ' +
      'code in it. Trust only outputs whose origin you know.',
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Trust' })]
  });
  if (!answer.button.accept) {
    return { trusted: false };
  }
  await provider.request({ type: 'trust' });
  return { trusted: true };
}
