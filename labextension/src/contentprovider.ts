// Which notebooks are collaborative, decided as each one opens, and their
// shared models.
//
// JupyterLab asks a content provider for a document's shared model
// synchronously, before anything is fetched, and keeps that model for the
// document's life. So every notebook gets a fresh YNotebook, bound only in
// `get()`, once the server has said how the notebook opens: to its sidecar's
// room (collaborative: never loaded from the file), to jupyter-collaboration's
// room when that is installed, or loaded from the file as stock JupyterLab
// does. Models are always marked collaborative (JupyterLab fixes that flag at
// creation): the document context then takes the file's new hash from
// `fileChanged` after the sidecar (or anyone) saved, and a notebook loaded from
// the file is autosaved here instead of by the document manager.
import { ISharedDocument, YNotebook } from '@jupyter/ydoc';
import { Dialog, showDialog } from '@jupyterlab/apputils';
import {
  Contents,
  IContentProvider,
  ServerConnection,
  User
} from '@jupyterlab/services';
import { nullTranslator } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';
import { CollabProvider } from './provider';
import { IRoom, fetchMode } from './requests';

export const CONTENT_PROVIDER_ID = 'kernel-collab';

/** jupyter-collaboration's document provider factory
 * (`IDocumentProviderFactory`), when present. */
export interface IOtherProviderFactory {
  create(options: {
    path: string;
    format: string;
    contentType: string;
    model: YNotebook;
    user: User.IManager;
    translator: unknown;
  }): { ready: Promise<void>; save?: () => Promise<void>; dispose(): void };
}

type Binding =
  | { kind: 'ours'; provider: CollabProvider }
  | { kind: 'rtc'; provider: ReturnType<IOtherProviderFactory['create']> }
  | { kind: 'file' };

interface IOpened {
  model: YNotebook;
  format: Contents.FileFormat;
  binding?: Promise<Binding>;
}

/**
 * Ctrl+S on a collaborative notebook: a plain save, which merges an outside
 * change first and never overwrites a file the sidecar could not read. Then,
 * only if the person confirms, "save and overwrite", which says what it
 * replaced.
 */
async function saveThroughRoom(
  provider: CollabProvider,
  path: string
): Promise<void> {
  try {
    await provider.request({ type: 'save' });
    return;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (!message.startsWith('not saved:') || !provider.canWrite) {
      throw error;
    }
    const answer = await showDialog({
      title: `${path} was not saved`,
      body:
        `${message}\n\nOverwrite the file on disk with the shared notebook? ` +
        'What is in the file now is lost.',
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: 'Save and Overwrite' })
      ]
    });
    if (!answer.button.accept) {
      throw error;
    }
  }
  const reply = await provider.request({ type: 'save', force: true });
  if (typeof reply.overwrote === 'string' && reply.overwrote) {
    await showDialog({
      title: `${path} saved`,
      body: `The shared notebook replaced ${reply.overwrote}.`,
      buttons: [Dialog.okButton()]
    });
  }
}

/** The content provider of notebooks (see the module's comment). */
export class KernelCollabContentProvider implements IContentProvider {
  constructor(
    private readonly _drive: Contents.IDrive,
    private readonly _settings: ServerConnection.ISettings,
    private readonly _user: User.IManager
  ) {
    this.sharedModelFactory = new SharedModelFactory(this);
  }

  readonly sharedModelFactory: SharedModelFactory;

  /** jupyter-collaboration's provider factory, used for notebooks that are not
   * ours. */
  otherFactory: IOtherProviderFactory | null = null;

  /** The collaborative provider of an open notebook's shared model, if it is
   * bound to one. */
  providerFor(model: unknown): CollabProvider | undefined {
    return this._byModel.get(model as YNotebook);
  }

  /** Called by the factory: the shared model of a notebook being opened. */
  createModel(
    options: Contents.ISharedFactoryOptions
  ): ISharedDocument | undefined {
    if (options.contentType !== 'notebook') {
      return this._drive.sharedModelFactory?.createNew(options);
    }
    const model = new YNotebook({ disableDocumentWideUndoRedo: true });
    const opened: IOpened = { model, format: options.format };
    this._opened.set(options.path, opened);
    // Decide and start syncing now, while JupyterLab builds the rest of the
    // document.
    opened.binding = this._bind(options.path, opened);
    opened.binding.catch(() => undefined); // awaited (and reported) by get()
    model.disposed.connect(() => {
      this._byModel.get(model)?.dispose();
      this._byModel.delete(model);
      void opened.binding?.then(b => b.kind === 'rtc' && b.provider.dispose());
      if (this._opened.get(options.path) === opened) {
        this._opened.delete(options.path);
      }
    });
    return model;
  }

  /** Emitted when a notebook was saved (by the sidecar, a collaborator or the
   * autosave). */
  get fileChanged(): ISignal<this, Contents.IChangedArgs> {
    return this._fileChanged;
  }

  /** Seconds between autosaves of notebooks loaded from their file (0: off). */
  autosaveInterval = 120;

  async get(
    path: string,
    options?: Contents.IFetchOptions
  ): Promise<Contents.IModel> {
    const opened = this._opened.get(path);
    if (
      !opened ||
      (options?.type !== undefined && options.type !== 'notebook')
    ) {
      return this._drive.get(path, {
        ...options,
        contentProviderId: undefined
      });
    }
    opened.binding ??= this._bind(path, opened);
    const binding = await opened.binding;
    if (binding.kind === 'file') {
      return this._drive.get(path, {
        ...options,
        contentProviderId: undefined
      });
    }
    // The document comes from a room: never load the file over it. Its hash is
    // the one the room last saved or read, which is also the one `fileChanged`
    // reports (a file hash read here could be ahead of what this page was told,
    // and JupyterLab would show a "File Changed" dialog before every save).
    const [model] = await Promise.all([
      this._drive.get(path, {
        ...options,
        content: false,
        contentProviderId: undefined
      }),
      options?.content ? binding.provider.ready : undefined
    ]);
    const hash = opened.model.getState('hash');
    return {
      ...model,
      format: 'json',
      content: null,
      ...(typeof hash === 'string' && hash ? { hash } : {})
    };
  }

  async save(
    path: string,
    options: Partial<Contents.IModel> & Contents.IContentProvisionOptions = {}
  ): Promise<Contents.IModel> {
    const binding = await this._opened.get(path)?.binding;
    if (binding?.kind === 'ours') {
      // "Save now": the sidecar writes the file; nothing is sent from here.
      await saveThroughRoom(binding.provider, path);
    } else if (binding?.kind === 'rtc' && binding.provider.save) {
      await binding.provider.save();
    } else {
      return this._drive.save(path, {
        ...options,
        contentProviderId: undefined
      });
    }
    return this.get(path, { type: 'notebook', content: false });
  }

  private async _bind(path: string, opened: IOpened): Promise<Binding> {
    let collaborative = false;
    let room: IRoom | undefined;
    try {
      const mode = await fetchMode(this._settings, path);
      collaborative = mode.collaborative;
      room = mode.room;
    } catch (error) {
      console.error(
        `kernel_collab: could not ask the server how to open ${path}; ` +
          'opening it from the file',
        error
      );
    }
    if (collaborative) {
      const provider = new CollabProvider(
        path,
        opened.model,
        this._settings,
        this._user
      );
      this._byModel.set(opened.model, provider);
      this._followSaves(path, opened.model);
      // Not awaited: the binding is known now, and get() waits for the sync.
      void provider
        .connect(room)
        .catch(error => console.error(`kernel_collab: ${path}`, error));
      return { kind: 'ours', provider };
    }
    if (this.otherFactory) {
      const provider = this.otherFactory.create({
        path,
        format: opened.format ?? 'json',
        contentType: 'notebook',
        model: opened.model,
        user: this._user,
        translator: nullTranslator.load('jupyter_collaboration')
      });
      this._followSaves(path, opened.model);
      return { kind: 'rtc', provider };
    }
    this._autosave(path, opened.model);
    return { kind: 'file' };
  }

  /** Tell the document context the file's new hash whenever the room saved
   * it. */
  private _followSaves(path: string, model: YNotebook): void {
    model.changed.connect((_, change) => {
      const hash = change.stateChange?.find(c => c.name === 'hash');
      if (!hash || !hash.newValue) {
        return;
      }
      // At once, in the same turn as the change: a save started after it must
      // not compare against the hash before it.
      this._fileChanged.emit({
        type: 'save',
        oldValue: { path, hash: hash.oldValue },
        newValue: { path, hash: hash.newValue }
      });
    });
  }

  /** Save a notebook loaded from its file some time after local edits, as
   * JupyterLab would. */
  private _autosave(path: string, model: YNotebook): void {
    let timer = 0;
    const save = async (): Promise<void> => {
      timer = 0;
      if (model.isDisposed) {
        return;
      }
      const saved = await this._drive.save(path, {
        type: 'notebook',
        format: 'json',
        content: model.toJSON(),
        contentProviderId: undefined
      });
      this._fileChanged.emit({
        type: 'save',
        oldValue: { path },
        newValue: saved
      });
    };
    model.ydoc.on('update', () => {
      if (!timer && this.autosaveInterval > 0) {
        timer = window.setTimeout(
          () => void save(),
          this.autosaveInterval * 1000
        );
      }
    });
    model.disposed.connect(() => window.clearTimeout(timer));
  }

  private _fileChanged = new Signal<this, Contents.IChangedArgs>(this);
  private _opened = new Map<string, IOpened>();
  private _byModel = new WeakMap<YNotebook, CollabProvider>();
}

/** The shared-model factory JupyterLab calls synchronously when a notebook
 * opens. */
class SharedModelFactory implements Contents.ISharedFactory {
  constructor(private readonly _owner: KernelCollabContentProvider) {}

  readonly collaborative = true;

  createNew(
    options: Contents.ISharedFactoryOptions
  ): ISharedDocument | undefined {
    return this._owner.createModel(options);
  }
}
