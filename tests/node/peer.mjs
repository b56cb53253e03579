// A JupyterLab-like peer of the kernel_collab sidecar, scripted over stdin/stdout.
//
// It holds the notebook in @jupyter/ydoc's YNotebook (JupyterLab 4's own model), synced with
// y-websocket's WebsocketProvider. Each stdin line is one JSON command; each answer is one JSON
// line on stdout, in order: {"ok": true, ...} or {"ok": false, "error": "..."}.
//
//   {"cmd":"connect","url":"ws://127.0.0.1:N","token":"T"}    -> once synced
//   {"cmd":"dump"}                                  -> {"notebook": ..., "streams": ...}
//   {"cmd":"set_source","index":i,"source":s}
//   {"cmd":"insert_cell","index":i,"cell":{"cell_type":...,"source":...}}  -> {"id": ...}
//   {"cmd":"set_metadata","index":i,"key":k,"value":v}    (without index: notebook metadata)
//   {"cmd":"wait_source","index":i,"equals":s}      -> once cell i's source equals s
//   {"cmd":"awareness","state":{...}}               sets the local awareness state
//   {"cmd":"peers"}                                 -> {"peers": {clientID: state}} of others
//   {"cmd":"wait_peer","match":{...}}               -> once another peer's state contains match
//   {"cmd":"close"}                                 disconnects and exits
//
// Commands run one at a time, so a waiting command holds back the ones after it.

import { createInterface } from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { YNotebook } from '@jupyter/ydoc'

let notebook = null
let provider = null

const send = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const connected = () => {
  if (provider === null) throw new Error('not connected')
  return notebook
}

const cellAt = (index) => {
  const cell = connected().getCell(index)
  if (cell === undefined) throw new Error(`no cell at index ${index}`)
  return cell
}

// Resolve once check() returns a value other than undefined, re-checking after each transaction.
const until = (check) => new Promise((resolve) => {
  const doc = connected().ydoc
  const onTransaction = () => {
    const value = check()
    if (value !== undefined) {
      doc.off('afterTransaction', onTransaction)
      resolve(value)
    }
  }
  doc.on('afterTransaction', onTransaction)
  onTransaction()
})

// Whether every key of `pattern` is found, recursively, in `value`.
const contains = (value, pattern) => {
  if (pattern === null || typeof pattern !== 'object') return value === pattern
  if (value === null || typeof value !== 'object') return false
  return Object.entries(pattern).every(([k, v]) => contains(value[k], v))
}

const otherPeers = () => {
  const peers = {}
  for (const [clientID, state] of connected().awareness.getStates()) {
    if (clientID !== notebook.ydoc.clientID) peers[clientID] = state
  }
  return peers
}

const commands = {
  connect ({ url, token, room = '' }) {
    if (provider !== null) throw new Error('already connected')
    notebook = new YNotebook()
    provider = new WebsocketProvider(url, room, notebook.ydoc, {
      params: token == null ? {} : { token },
      WebSocketPolyfill: WebSocket,
      awareness: notebook.awareness,
      disableBc: true
    })
    const p = provider
    return new Promise((resolve, reject) => {
      const settle = (error) => {
        p.off('sync', onSync)
        p.off('connection-error', onError)
        p.off('connection-close', onClose)
        if (error === undefined) return resolve({ url: p.url })
        p.destroy() // no reconnection attempts
        provider = notebook = null
        reject(error)
      }
      const onSync = (synced) => { if (synced) settle() }
      // ws reports a refused upgrade as an error "Unexpected server response: 401".
      const onError = (event) => settle(new Error(event?.message ?? 'connection error'))
      const onClose = (event) => settle(new Error(`closed before sync (code ${event?.code})`))
      p.on('sync', onSync)
      p.on('connection-error', onError)
      p.on('connection-close', onClose)
    })
  },

  dump () {
    const nb = connected()
    const streams = []
    nb.cells.forEach((cell, index) => {
      if (cell.cell_type !== 'code') return
      cell.youtputs.forEach((output, outputIndex) => {
        if (output.get('output_type') !== 'stream') return
        const text = output.get('text')
        streams.push({
          cell: index,
          output: outputIndex,
          is_ytext: text instanceof Y.Text,
          text: text.toString()
        })
      })
    })
    const executionStates = nb.cells.map((cell) => cell.cell_type === 'code' ? cell.executionState : null)
    return { notebook: nb.toJSON(), streams, execution_states: executionStates }
  },

  set_source ({ index, source }) {
    cellAt(index).setSource(source)
    return {}
  },

  insert_cell ({ index, cell }) {
    const nb = connected()
    const inserted = nb.insertCell(index ?? nb.cells.length, cell)
    return { id: inserted.getId() }
  },

  set_metadata ({ index, key, value }) {
    const target = index == null ? connected() : cellAt(index)
    target.setMetadata(key, value)
    return {}
  },

  async wait_source ({ index, equals }) {
    await until(() => connected().getCell(index)?.getSource() === equals ? true : undefined)
    return {}
  },

  awareness ({ state }) {
    connected().awareness.setLocalState(state)
    return {}
  },

  peers () {
    return { peers: otherPeers() }
  },

  async wait_peer ({ match }) {
    const awareness = connected().awareness
    const found = () => Object.values(otherPeers()).find((state) => contains(state, match))
    const state = await new Promise((resolve) => {
      const onChange = () => {
        const hit = found()
        if (hit !== undefined) {
          awareness.off('change', onChange)
          resolve(hit)
        }
      }
      awareness.on('change', onChange)
      onChange()
    })
    return { state }
  },

  close () {
    provider?.destroy()
    notebook?.dispose()
    provider = null
    notebook = null
    return {}
  }
}

const run = async (line) => {
  let request
  try {
    request = JSON.parse(line)
    const command = commands[request.cmd]
    if (command === undefined) throw new Error(`unknown command ${JSON.stringify(request.cmd)}`)
    send({ ok: true, ...(await command(request)) })
  } catch (error) {
    send({ ok: false, error: String(error?.message ?? error) })
  }
  if (request?.cmd === 'close') process.exit(0)
}

let queue = Promise.resolve()
const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (line.trim() !== '') queue = queue.then(() => run(line))
})
lines.on('close', () => queue.then(() => process.exit(0)))
