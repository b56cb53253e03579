// Every place this extension changes JupyterLab's own behaviour, in one module,
// each with the JupyterLab versions it was written for. Outside that range a
// patch does nothing and says so (the safe default: outputs stay untrusted,
// stock commands run as they are). The kernel actions' patch is the exception:
// it only needs the kernel connection's public methods, and where JupyterLab
// stops calling them the stock routes run, so it is applied on any version.
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICodeCellModel } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

/** Whether the host is one these patches were written and tested for:
 * JupyterLab ≥ 4.4, < 5, or Notebook ≥ 7.4, < 8 (built on it). */
export function hostSupported(app: JupyterFrontEnd): boolean {
  const [major, minor] = app.version.split('.').map(part => parseInt(part, 10));
  const [want, since] = app.name === 'JupyterLab' ? [4, 4] : [7, 4];
  const ok = major === want && minor >= since;
  if (!ok) {
    warnOnce(
      `${app.name} ${app.version} is outside the versions its patches were ` +
        'written for'
    );
  }
  return ok;
}

const warned = new Set<string>();
/** Say once per consequence that a patch does nothing here, and what follows
 * from it. */
function warnOnce(
  what: string,
  consequence = 'collaborative outputs stay untrusted'
): void {
  if (!warned.has(consequence)) {
    warned.add(consequence);
    console.warn(`kernel_collab: ${what}; ${consequence}`);
  }
}

type WritableShared = { setMetadata?: unknown; updateOutputs?: unknown };

/**
 * Set how this page renders a code cell's outputs, without writing to the
 * shared document.
 *
 * JupyterLab's `CellModel.trusted` setter writes `metadata.trusted` and
 * re-writes every output into the shared model (JupyterLab 4.4–4.6:
 * `onTrustedChanged` → `setMetadata`, and the output area's "set" events →
 * `updateOutputs`). Trust is per viewer here, decided by the sidecar's record,
 * so those writes are suppressed for the duration of the change. Returns
 * whether the model now has the trust asked for.
 */
export function setCellTrust(model: ICodeCellModel, trusted: boolean): boolean {
  if (model.trusted === trusted) {
    return true;
  }
  const shared = model.sharedModel as unknown as WritableShared;
  if (
    typeof shared.setMetadata !== 'function' ||
    typeof shared.updateOutputs !== 'function'
  ) {
    warnOnce(
      "this JupyterLab's cell model has no setMetadata/updateOutputs to hold " +
        'back'
    );
    return !trusted && !model.trusted;
  }
  const noop = (): void => undefined;
  shared.setMetadata = noop;
  shared.updateOutputs = noop;
  try {
    model.trusted = trusted;
  } finally {
    delete shared.setMetadata; // back to the prototype's methods
    delete shared.updateOutputs;
  }
  return model.trusted === trusted;
}

/**
 * Run `hook` on every code cell model a notebook is about to render, before its
 * outputs render: wraps the content factory's `createCodeCell` (JupyterLab
 * 4.4–4.6 create every code cell widget through it, with `options.model`).
 */
export function beforeCodeCellRenders(
  factory: NotebookPanel.IContentFactory,
  hook: (model: ICodeCellModel) => void
): void {
  const original = factory.createCodeCell.bind(factory);
  factory.createCodeCell = options => {
    hook(options.model);
    return original(options);
  };
}

/**
 * Route a stock command to `handler` when it applies to the current notebook
 * (it returns `undefined` when it does not, and the stock command runs). Used
 * for "Trust Notebook", whose stock version flips trust in this page only.
 */
export function interceptCommand(
  app: JupyterFrontEnd,
  id: string,
  handler: (args: unknown) => Promise<unknown> | undefined
): void {
  const commands = app.commands;
  const execute = commands.execute.bind(commands);
  commands.execute = (
    command: string,
    args?: Parameters<typeof execute>[1]
  ) => {
    if (command === id) {
      const handled = handler(args);
      if (handled !== undefined) {
        return handled;
      }
    }
    return execute(command, args);
  };
}

type ReplaceableKernel = { interrupt?: unknown; restart?: unknown };

/**
 * Send a notebook's "Interrupt Kernel" and "Restart Kernel" to `route`
 * (kernel_collab's routes, which record who did it) instead of JupyterLab's
 * kernels API: replaces `interrupt` and `restart` on the session's kernel
 * connection object (JupyterLab 4.4–4.6: the toolbar's interrupt button calls
 * `kernel.interrupt()`, and every restart goes through
 * `SessionContext.restartKernel`, which calls `kernel.restart()`).
 */
export function routeKernelActions(
  kernel: Kernel.IKernelConnection,
  route: (action: 'interrupt' | 'restart') => Promise<unknown>
): void {
  const replaceable = kernel as unknown as ReplaceableKernel;
  if (
    typeof replaceable.interrupt !== 'function' ||
    typeof replaceable.restart !== 'function'
  ) {
    warnOnce(
      "this JupyterLab's kernel connection has no interrupt/restart to replace",
      'interrupt and restart go to the kernel unrecorded'
    );
    return;
  }
  kernel.interrupt = async () => {
    await route('interrupt');
  };
  kernel.restart = async () => {
    await route('restart');
  };
}

/**
 * Keep a reader's page from sending document updates: unhooks y-websocket's
 * update handler (y-websocket 3.x: `provider._updateHandler`, subscribed to
 * the doc's `update` event). JupyterLab writes to a document it shows even when
 * nobody edits it (`state.dirty`, cells' `metadata.editable`), and the sidecar
 * closes a reader who sends an update (4403). Local changes then stay local.
 * Returns whether updates are held back.
 */
export function holdLocalUpdates(
  provider: object,
  doc: { off(name: 'update', handler: (...args: any[]) => void): void }
): boolean {
  const handler = (provider as { _updateHandler?: unknown })._updateHandler;
  if (typeof handler !== 'function') {
    warnOnce(
      'this y-websocket has no _updateHandler to unhook',
      "a reader's page may send updates and be closed by the sidecar"
    );
    return false;
  }
  doc.off('update', handler as (...args: any[]) => void);
  return true;
}

/** jupyter-collaboration's timeline slider: its plugin and its status bar
 * item's node id (jupyter-collaboration 5, `@jupyter/docprovider-extension`
 * 5.0's `statusBarTimeline`). */
const RTC_TIMELINE_PLUGIN = '@jupyter/docprovider-extension:statusBarTimeline';
const RTC_TIMELINE_ID = 'jp-slider-status-bar';
/** The class on the page's body that hides it (see style/index.css). */
export const HIDE_RTC_TIMELINE = 'kc-hide-rtc-timeline';

/**
 * Hide jupyter-collaboration's timeline slider while one of our notebooks is
 * the current widget: our notebooks have their own history. Its status bar
 * item (`#jp-slider-status-bar`) shows for every document whose model is
 * collaborative, as ours are, and would show an empty box or another history.
 * Returns the function to call when whether the current widget is ours may
 * have changed (a notebook is known to be ours only once it has opened).
 */
export function hideRtcTimeline(
  app: JupyterFrontEnd,
  isOurs: (widget: Widget | null) => boolean
): () => void {
  const update = (): void => {
    document.body.classList.toggle(
      HIDE_RTC_TIMELINE,
      isOurs(app.shell.currentWidget)
    );
  };
  if (!app.hasPlugin(RTC_TIMELINE_PLUGIN) || !hostSupported(app)) {
    return () => undefined;
  }
  app.shell.currentChanged?.connect(update);
  void app.restored.then(() => {
    if (
      app.isPluginActivated(RTC_TIMELINE_PLUGIN) &&
      !document.getElementById(RTC_TIMELINE_ID)
    ) {
      warnOnce(
        `jupyter-collaboration's timeline is not #${RTC_TIMELINE_ID}, as ` +
          'in its version 5',
        'its timeline slider may show on collaborative notebooks too'
      );
    }
    update();
  });
  return update;
}
