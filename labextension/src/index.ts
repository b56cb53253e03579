// kernel_collab's JupyterLab plugins: the content provider that binds
// collaborative notebooks to their sidecar, the cell executor, collaborators'
// cursors, and the notebook panel's views.
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, InputDialog, showDialog } from '@jupyterlab/apputils';
import {
  IEditorExtensionRegistry,
  EditorExtensionRegistry
} from '@jupyterlab/codemirror';
import { IDocumentManager } from '@jupyterlab/docmanager';
import {
  INotebookCellExecutor,
  INotebookTracker,
  INotebookWidgetFactory,
  NotebookPanel,
  NotebookWidgetFactory
} from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Contents, Kernel } from '@jupyterlab/services';
import { SidePanel, historyIcon, usersIcon } from '@jupyterlab/ui-components';
import { Token } from '@lumino/coreutils';
import { AccordionPanel, Widget } from '@lumino/widgets';
import type * as Y from 'yjs';
import {
  CONTENT_PROVIDER_ID,
  IOtherProviderFactory,
  KernelCollabContentProvider
} from './contentprovider';
import { CollaboratorsView } from './collaborators';
import { remoteCursors } from './cursors';
import { CollabCellExecutor } from './executor';
import { HistoryView } from './history';
import {
  beforeCodeCellRenders,
  hideRtcTimeline,
  hostSupported,
  interceptCommand,
  routeKernelActions
} from './hostpatches';
import { decoratePanel } from './panel';
import { CLOSE_READ_ONLY, CollabProvider } from './provider';
import { kernelAction } from './requests';
import { alignCell, followTrust, trustNotebook } from './trust';

/** kernel_collab's content provider, for the other plugins. */
export const IKernelCollab = new Token<KernelCollabContentProvider>(
  'kernel-collab:IKernelCollab'
);

const PROVISIONER = 'kernel-collab';

function isCollaborativeSpec(
  app: JupyterFrontEnd,
  name: string | undefined | null
): boolean {
  if (!name) {
    return false;
  }
  const spec = app.serviceManager.kernelspecs.specs?.kernelspecs[name];
  const provisioner = (
    spec?.metadata as
      { kernel_provisioner?: { provisioner_name?: string } } | undefined
  )?.kernel_provisioner;
  return provisioner?.provisioner_name === PROVISIONER;
}

const contentProvider: JupyterFrontEndPlugin<KernelCollabContentProvider> = {
  id: 'kernel-collab:content-provider',
  description:
    'Binds notebooks on a collaborative kernel to their ' +
    "sidecar's shared document.",
  autoStart: true,
  provides: IKernelCollab,
  requires: [INotebookWidgetFactory],
  activate: (
    app: JupyterFrontEnd,
    notebookFactory: NotebookWidgetFactory.IFactory
  ) => {
    const drive = (
      app.serviceManager.contents as { defaultDrive?: Contents.IDrive }
    ).defaultDrive;
    const registry = drive?.contentProviderRegistry;
    if (!drive || !registry) {
      throw new Error(
        'kernel_collab needs JupyterLab ≥ 4.4 (content provider registry)'
      );
    }
    const provider = new KernelCollabContentProvider(
      drive,
      drive.serverSettings,
      app.serviceManager.user
    );
    registry.register(CONTENT_PROVIDER_ID, provider);
    // jupyter-collaboration's notebook plugin is disabled by this package (a
    // factory's content provider can be set once); its rooms still serve the
    // notebooks that are not ours.
    void import('@jupyter/docprovider')
      .then(module => {
        const token = (
          module as { IDocumentProviderFactory?: Token<IOtherProviderFactory> }
        ).IDocumentProviderFactory;
        return token ? app.resolveOptionalService(token) : null;
      })
      .then(factory => {
        provider.otherFactory = factory ?? null;
      })
      .catch(() => {
        // jupyter-collaboration is not installed: such notebooks load from
        // their file.
      });
    notebookFactory.contentProviderId = CONTENT_PROVIDER_ID;
    return provider;
  }
};

const executor: JupyterFrontEndPlugin<INotebookCellExecutor> = {
  id: 'kernel-collab:cell-executor',
  description:
    "Runs cells of collaborative notebooks through the kernel's shared queue.",
  autoStart: true,
  provides: INotebookCellExecutor,
  requires: [IKernelCollab],
  activate: (_app: JupyterFrontEnd, contents: KernelCollabContentProvider) =>
    new CollabCellExecutor(contents)
};

const cursors: JupyterFrontEndPlugin<void> = {
  id: 'kernel-collab:cursors',
  description:
    "Shows collaborators' carets and selections in shared notebooks.",
  autoStart: true,
  requires: [IEditorExtensionRegistry],
  activate: (_app: JupyterFrontEnd, editors: IEditorExtensionRegistry) => {
    // Replaces jupyter-collaboration's cursors (disabled by this package; same
    // awareness fields), so a notebook in either kind of room shows each
    // collaborator once.
    editors.addExtension({
      name: 'kernel-collab:remote-cursors',
      factory: options => {
        const shared = options.model.sharedModel as unknown as {
          ysource?: Y.Text;
          notebook?: {
            awareness?: CollabProvider['model']['awareness'];
          } | null;
        };
        const awareness = shared.notebook?.awareness;
        if (!awareness || !shared.ysource) {
          return null;
        }
        return EditorExtensionRegistry.createImmutableExtension(
          remoteCursors(shared.ysource, awareness)
        );
      }
    });
  }
};

/** Close every view of `path` and open it again (in whichever mode the server
 * now says). */
async function reopen(
  docManager: IDocumentManager,
  path: string
): Promise<void> {
  await docManager.closeFile(path);
  docManager.openOrReveal(path);
}

const panels: JupyterFrontEndPlugin<void> = {
  id: 'kernel-collab:notebook-panel',
  description:
    'The room bar, banners, run marks, input prompts, kernel actions and ' +
    'history of collaborative notebooks.',
  autoStart: true,
  requires: [
    IKernelCollab,
    INotebookTracker,
    IDocumentManager,
    NotebookPanel.IContentFactory,
    IRenderMimeRegistry
  ],
  activate: (
    app: JupyterFrontEnd,
    contents: KernelCollabContentProvider,
    tracker: INotebookTracker,
    docManager: IDocumentManager,
    cellFactory: NotebookPanel.IContentFactory,
    rendermime: IRenderMimeRegistry
  ) => {
    const settings = app.serviceManager.serverSettings;
    const ours = (widget: unknown): widget is NotebookPanel =>
      widget instanceof NotebookPanel &&
      !!contents.providerFor(widget.model?.sharedModel);
    const timelineChanged = hideRtcTimeline(app, ours);
    const openHistory = historyOpener(app, contents, rendermime);
    app.commands.addCommand(SHOW_HISTORY, {
      label: 'Notebook History',
      caption:
        'Earlier versions of this collaborative notebook: who made them, ' +
        'what changed, restoring one',
      icon: historyIcon,
      describedBy: { args: { type: 'object', properties: {} } },
      isEnabled: () => ours(tracker.currentWidget),
      execute: () => {
        if (ours(tracker.currentWidget)) {
          openHistory(tracker.currentWidget);
        }
      }
    });
    // Not a toolbar button: the notebook toolbar's own items (the execution indicator) would
    // be pushed into its overflow menu. Right-click a collaborative notebook, or the palette.
    app.contextMenu.addItem({
      command: SHOW_HISTORY,
      selector: '.kc-collaborative .jp-Notebook',
      rank: 100
    });
    // Outside the JupyterLab versions the patches were written for,
    // collaborative outputs stay untrusted (cell models start untrusted: the
    // sidecar keeps metadata.trusted out).
    const patched = hostSupported(app);
    if (patched) {
      beforeCodeCellRenders(cellFactory, model => {
        const provider = contents.providerFor(
          model.sharedModel.notebook ?? undefined
        );
        if (provider) {
          alignCell(provider, model);
        }
      });
      interceptCommand(app, 'notebook:trust', () => {
        const provider = contents.providerFor(
          tracker.currentWidget?.model?.sharedModel
        );
        return provider ? trustNotebook(provider) : undefined;
      });
    }
    const reopening = new Set<string>();
    const reopenOnce = (path: string): void => {
      if (reopening.has(path)) {
        return;
      }
      reopening.add(path);
      void reopen(docManager, path).finally(() => reopening.delete(path));
    };
    tracker.widgetAdded.connect(async (_, panel: NotebookPanel) => {
      const context = panel.context;
      await context.ready;
      const provider = contents.providerFor(panel.model?.sharedModel);
      if (provider) {
        panel.addClass('kc-collaborative');
        decoratePanel(panel, provider, () => {
          void app.commands.execute(SHOW_COLLABORATORS);
        });
        timelineChanged();
        if (patched) {
          const unfollow = followTrust(panel, provider);
          panel.disposed.connect(unfollow);
        }
        provider.inputRequested.connect(async (_, request) => {
          const result = request.password
            ? await InputDialog.getPassword({
                title: request.prompt || 'Input requested by the kernel'
              })
            : await InputDialog.getText({
                title: request.prompt || 'Input requested by the kernel'
              });
          const answer = result.button.accept
            ? { value: result.value ?? '' }
            : { error: 'cancelled by the person asked' };
          await provider.request({
            type: 'input_reply',
            request_id: request.request_id,
            ...answer
          });
        });
        provider.closed.connect(async (_, closed) => {
          await showDialog({
            title:
              closed.code !== CLOSE_READ_ONLY
                ? 'The notebook was re-created'
                : provider.canWrite
                  ? 'Your change was refused'
                  : 'You may only read this notebook',
            body:
              closed.code !== CLOSE_READ_ONLY
                ? "The notebook's document was re-created from its file " +
                  'since this copy was loaded. It reopens.'
                : provider.canWrite
                  ? "The notebook's kernel refused a change from this page " +
                    `(${closed.reason || 'no reason given'}). ` +
                    'The notebook reopens as it is.'
                  : 'Your change was refused: you do not have permission to ' +
                    'edit. The notebook reopens as it is.',
            buttons: [Dialog.okButton()]
          });
          reopenOnce(context.path);
        });
      }
      const patchKernel = (
        kernel: Kernel.IKernelConnection | null | undefined
      ): void => {
        const ours = contents.providerFor(panel.model?.sharedModel);
        if (!kernel || !ours) {
          return;
        }
        // Interrupt and restart go through kernel_collab's routes, recorded
        // with who did it.
        routeKernelActions(kernel, action =>
          kernelAction(settings, context.path, action)
        );
      };
      void context.sessionContext.ready.then(() =>
        patchKernel(context.sessionContext.session?.kernel)
      );
      context.sessionContext.kernelChanged.connect(async (_, change) => {
        patchKernel(change.newValue);
        const name = change.newValue?.name;
        if (!name || !change.oldValue || !context.isReady) {
          return;
        }
        const nowCollaborative = isCollaborativeSpec(app, name);
        if (
          nowCollaborative === !!contents.providerFor(panel.model?.sharedModel)
        ) {
          return;
        }
        await showDialog({
          title: nowCollaborative
            ? 'Opening collaboratively'
            : 'Leaving the collaborative kernel',
          body: nowCollaborative
            ? `${context.path} is now on a collaborative kernel. ` +
              'It is saved and reopens so that everyone on it shares one ' +
              'live notebook.'
            : `${context.path} is no longer on a collaborative kernel. ` +
              'It is saved and reopens as an ordinary notebook.',
          buttons: [Dialog.okButton()]
        });
        await context.save();
        reopenOnce(context.path);
      });
    });
  }
};

/** Whether a transaction changed more than `map` (the room's state map, whose
 * changes make no new version). */
function changesMoreThan(transaction: Y.Transaction, map: Y.Map<any>): boolean {
  for (const changed of transaction.changed.keys()) {
    let type: Y.AbstractType<any> | null = changed;
    while (type && type !== map) {
      type = type.parent;
    }
    if (type !== map) {
      return true;
    }
  }
  return false;
}

/** The command that opens the current notebook's history. */
export const SHOW_HISTORY = 'kernel-collab:show-history';

/** Opens a collaborative notebook's history view, one per notebook: in
 * JupyterLab beside the notebook, in Notebook 7 in the right side panel. */
function historyOpener(
  app: JupyterFrontEnd,
  contents: KernelCollabContentProvider,
  rendermime: IRenderMimeRegistry
): (panel: NotebookPanel) => void {
  const views = new Map<NotebookPanel, HistoryView>();
  return (panel: NotebookPanel) => {
    const provider = contents.providerFor(panel.model?.sharedModel);
    if (!provider) {
      return;
    }
    let view = views.get(panel);
    if (!view || view.isDisposed) {
      const ydoc = provider.model.ydoc;
      const created = new HistoryView({
        path: () => panel.context.path,
        canWrite: () => provider.canWrite,
        settings: app.serviceManager.serverSettings,
        rendermime,
        onDocumentChange: listener => {
          const onTransaction = (transaction: Y.Transaction): void => {
            if (changesMoreThan(transaction, provider.model.ystate)) {
              listener();
            }
          };
          ydoc.on('afterTransaction', onTransaction);
          return () => ydoc.off('afterTransaction', onTransaction);
        }
      });
      created.id = `kc-history-${panel.id}`;
      views.set(panel, created);
      created.disposed.connect(() => {
        if (views.get(panel) === created) {
          views.delete(panel);
        }
      });
      panel.disposed.connect(() => created.dispose());
      if (app.name === 'JupyterLab') {
        app.shell.add(created, 'main', { mode: 'split-right', ref: panel.id });
      } else {
        app.shell.add(created, 'right', { rank: 400 });
      }
      view = created;
    }
    app.shell.activateById(view.id);
  };
}

/** The command that opens the collaborators panel. */
export const SHOW_COLLABORATORS = 'kernel-collab:show-collaborators';

/** jupyter-collaboration's side panel (`@jupyter/collaboration-extension:
 * rtcPanel`: "User info" and its server-wide "Online Collaborators"), if it is
 * installed and enabled. */
function jupyterCollaborationPanel(app: JupyterFrontEnd): SidePanel | null {
  for (const widget of app.shell.widgets('left')) {
    if (
      widget.id === 'jp-collaboration-panel' &&
      typeof (widget as SidePanel).insertWidget === 'function'
    ) {
      return widget as SidePanel;
    }
  }
  return null;
}

const collaborators: JupyterFrontEndPlugin<void> = {
  id: 'kernel-collab:collaborators',
  description:
    'The collaborators panel: everyone in the current collaborative ' +
    'notebook, their role and cell; jump to them or follow them.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    const view = new CollaboratorsView();
    const follow = (): void => view.setNotebook(tracker.currentWidget);
    tracker.currentChanged.connect(follow);
    follow();
    // One collaborators panel: jupyter-collaboration's, with this notebook's
    // section first, when it is there; else ours (JupyterLab: the left side
    // bar, as jupyter-collaboration's; Notebook 7, whose notebook page has no
    // left side bar open: the right one, opened from the toolbar).
    let container: Widget = view;
    const placed = app.restored.then(() => {
      const theirs = jupyterCollaborationPanel(app);
      if (theirs) {
        theirs.insertWidget(0, view);
        container = theirs;
        return;
      }
      const ours = new SidePanel();
      ours.id = 'kc-collaborators-panel';
      ours.title.icon = usersIcon;
      ours.title.caption = 'Collaborators';
      ours.addClass('kc-collaborators-panel');
      ours.addWidget(view);
      container = ours;
      app.shell.add(ours, app.name === 'JupyterLab' ? 'left' : 'right', {
        rank: 300
      });
    });
    app.commands.addCommand(SHOW_COLLABORATORS, {
      label: 'Show Collaborators',
      caption: 'Who is in this notebook, what they may do, where they are',
      icon: usersIcon,
      describedBy: { args: { type: 'object', properties: {} } },
      execute: async () => {
        await placed;
        app.shell.activateById(container.id);
        const content = (container as SidePanel).content;
        if (content instanceof AccordionPanel) {
          const index = content.widgets.indexOf(view);
          if (index >= 0 && !view.isVisible) {
            content.expand(index);
          }
        }
      }
    });
  }
};

export default [contentProvider, executor, cursors, panels, collaborators];
