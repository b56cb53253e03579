// The cell executor: collaborative notebooks run cells through the kernel's
// shared queue (the sidecar writes every output; this browser never does), the
// rest run as stock JupyterLab.
import { ISharedNotebook } from '@jupyter/ydoc';
import { INotebookCellExecutor, runCell } from '@jupyterlab/notebook';
import { KernelCollabContentProvider } from './contentprovider';
import { CollabProvider } from './provider';
import { ICellRunState, cellRunState, runStates } from './state';

/** The executor JupyterLab uses for every notebook cell. */
export class CollabCellExecutor implements INotebookCellExecutor {
  constructor(private readonly _contents: KernelCollabContentProvider) {}

  async runCell(
    options: INotebookCellExecutor.IRunCellOptions
  ): Promise<boolean> {
    const { cell, notebook } = options;
    const provider = this._contents.providerFor(notebook.sharedModel);
    if (!provider || cell.model.type !== 'code') {
      return runCell(options);
    }
    if (!provider.canExecute) {
      throw new Error(
        'You may read and edit this notebook, but not run its cells.'
      );
    }
    // Trust is not set here: the sidecar vouches for what its kernel writes,
    // once it has cleared the cell's old outputs (see trust.ts).
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
    const success = await finished(
      provider,
      notebook.sharedModel,
      cellId,
      before
    );
    options.onCellExecuted({ cell, success });
    return success;
  }
}

/** Runs this browser waits on in one notebook, checked together on each change
 * of the document (one read of the room's state per change, however many cells
 * Run All queued). */
class PendingRuns {
  constructor(
    private readonly _provider: CollabProvider,
    private readonly _model: ISharedNotebook
  ) {}

  /** Resolves when the queued cell has run (true when it succeeded) or was
   * cancelled unrun. */
  add(cellId: string, before: ICellRunState): Promise<boolean> {
    return new Promise<boolean>(resolve => {
      const waiters = this._waiting.get(cellId) ?? [];
      waiters.push({
        previousStart: before.last?.start,
        previousCancelled: JSON.stringify(before.cancelled),
        resolve
      });
      this._waiting.set(cellId, waiters);
      if (this._waiting.size === 1 && waiters.length === 1) {
        this._model.changed.connect(this._check, this);
      }
      this._check();
    });
  }

  private _check(): void {
    const states = this._provider.isDisposed
      ? null
      : runStates(this._model, this._waiting.keys());
    for (const [cellId, waiters] of this._waiting) {
      const now = states?.get(cellId);
      const kept = waiters.filter(waiter => {
        let success: boolean | null = null;
        if (!now) {
          success = false; // the notebook was closed
        } else if (
          now.last &&
          now.last.start !== waiter.previousStart &&
          now.last.end !== null
        ) {
          success = now.last.status === 'ok';
        } else if (
          !now.queued &&
          !now.running &&
          now.cancelled.length &&
          JSON.stringify(now.cancelled) !== waiter.previousCancelled
        ) {
          success = false;
        }
        if (success !== null) {
          waiter.resolve(success);
        }
        return success === null;
      });
      if (kept.length) {
        this._waiting.set(cellId, kept);
      } else {
        this._waiting.delete(cellId);
      }
    }
    if (!this._waiting.size) {
      this._model.changed.disconnect(this._check, this);
    }
  }

  private _waiting = new Map<
    string,
    {
      previousStart?: number;
      previousCancelled: string;
      resolve: (success: boolean) => void;
    }[]
  >();
}

const pendingRuns = new WeakMap<ISharedNotebook, PendingRuns>();

function finished(
  provider: CollabProvider,
  model: ISharedNotebook,
  cellId: string,
  before: ICellRunState
): Promise<boolean> {
  let pending = pendingRuns.get(model);
  if (!pending) {
    pending = new PendingRuns(provider, model);
    pendingRuns.set(model, pending);
  }
  return pending.add(cellId, before);
}
