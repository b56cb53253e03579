// The cell executor: collaborative notebooks run cells through the kernel's shared queue (the
// sidecar writes every output; this browser never does), the rest run as stock JupyterLab.
import { ISharedNotebook } from '@jupyter/ydoc';
import { INotebookCellExecutor, runCell } from '@jupyterlab/notebook';
import { KernelCollabContentProvider } from './contentprovider';
import { CollabProvider } from './provider';
import { cellRunState } from './state';

/** The executor JupyterLab uses for every notebook cell. */
export class CollabCellExecutor implements INotebookCellExecutor {
  constructor(private readonly _contents: KernelCollabContentProvider) {}

  async runCell(options: INotebookCellExecutor.IRunCellOptions): Promise<boolean> {
    const { cell, notebook } = options;
    const provider = this._contents.providerFor(notebook.sharedModel);
    if (!provider || cell.model.type !== 'code') {
      return runCell(options);
    }
    if (!provider.canExecute) {
      throw new Error('You may read and edit this notebook, but not run its cells.');
    }
    // As the stock executor does: a cell someone here runs is trusted.
    cell.model.trusted = true;
    options.onCellExecutionScheduled({ cell });
    const cellId = cell.model.sharedModel.getId();
    const before = cellRunState(notebook.sharedModel, cellId);
    try {
      await provider.request({
        type: 'execute',
        cell_id: cellId,
        record_timing: options.notebookConfig.recordTiming
      });
    } catch (error) {
      options.onCellExecuted({ cell, success: false });
      throw error;
    }
    const success = await finished(provider, notebook.sharedModel, cellId, before);
    options.onCellExecuted({ cell, success });
    return success;
  }
}

/** Resolves when the queued cell has run (true when it succeeded) or was cancelled unrun. */
function finished(
  provider: CollabProvider,
  model: ISharedNotebook,
  cellId: string,
  before: ReturnType<typeof cellRunState>
): Promise<boolean> {
  const previousStart = before.last?.start;
  const previousCancelled = JSON.stringify(before.cancelled);
  return new Promise<boolean>(resolve => {
    const check = (): void => {
      if (provider.isDisposed) {
        done(false);
        return;
      }
      const now = cellRunState(model, cellId);
      if (now.last && now.last.start !== previousStart && now.last.end !== null) {
        done(now.last.status === 'ok');
      } else if (!now.queued && !now.running && now.cancelled.length &&
                 JSON.stringify(now.cancelled) !== previousCancelled) {
        done(false);
      }
    };
    const done = (success: boolean): void => {
      model.changed.disconnect(check);
      resolve(success);
    };
    model.changed.connect(check);
    check();
  });
}
