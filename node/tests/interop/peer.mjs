// A js-libp2p 3 peer for the node's interop test (node/tests/e2e/interop.rs).
//
// It dials one Starling node, joins the presence topic and one project owner's topic with
// Starling's message-id rule (blake3 of the data, docs/node.md), serves and queries the DHT on
// /starling/kad/1.0.0, and reports what happens as one JSON object per line on stdout:
//
//   {"event":"listening","peer_id":...}        started
//   {"event":"ready"}                         the node's subscription to the topic is known
//   {"event":"gossip","topic":...,"id":hex,"from":...,"echoed":bool}
//   {"event":"dht_answered","closer":n}       the node answered our DHT query
//   {"event":"dht_served","type":...}         we answered a DHT request from the node
//   {"event":"score","node":x,"mesh":bool}    the node's score here, every 5 s
//   {"event":"error","message":...}
//
// With STARLING_ECHO=1 every message the node published is sent back to it once, as an honest
// js relay does when the origin is in its mesh: the node must not penalise us for it.
//
// Input (environment): STARLING_ADDR (multiaddr with /p2p/), STARLING_TOPIC, STARLING_ECHO,
// STARLING_DEADLINE_MS (exit after this however things go; default 240000). It also exits when
// stdin closes, so a test that dies takes the peer with it.

import './node22.mjs'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { blake3 } from '@noble/hashes/blake3.js'

const PRESENCE = 'starling/v1/presence'
const addr = multiaddr(process.env.STARLING_ADDR)
const topic = process.env.STARLING_TOPIC
const echo = process.env.STARLING_ECHO === '1'
const deadlineMs = Number(process.env.STARLING_DEADLINE_MS ?? 240000)

const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const hex = (bytes) => Buffer.from(bytes).toString('hex')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    pubsub: gossipsub({
      // Starling's rule: the id is the 32 bytes of blake3 over the message's data field.
      msgIdFn: (msg) => blake3(msg.data),
      allowPublishToZeroTopicPeers: true
    }),
    dht: kadDHT({
      protocol: '/starling/kad/1.0.0',
      clientMode: false,
      // The test runs on 127.0.0.1: keep private addresses.
      peerInfoMapper: passthroughMapper
    })
  }
})

let starling = null
const gs = node.services.pubsub
const dht = node.services.dht

// Count the DHT requests we serve for the node (it asks when it learns a project).
const handle = dht.rpc.handleMessage.bind(dht.rpc)
dht.rpc.handleMessage = async (peerId, msg) => {
  if (starling != null && peerId.equals(starling)) {
    say({ event: 'dht_served', type: String(msg.type) })
  }
  return handle(peerId, msg)
}

const echoed = new Set()
gs.addEventListener('gossipsub:message', (ev) => {
  const { propagationSource, msgId, msg } = ev.detail
  const from = msg.type === 'signed' ? msg.from.toString() : null
  let sent = false
  if (echo && starling != null && from === starling.toString() && !echoed.has(msgId)) {
    echoed.add(msgId)
    const raw = gs.mcache.msgs.get(msgId)?.message
    if (raw != null) {
      sent = gs.sendRpc(propagationSource.toString(), { subscriptions: [], messages: [raw] })
    }
  }
  say({ event: 'gossip', topic: msg.topic, id: hex(blake3(msg.data)), from, echoed: sent })
})

gs.subscribe(PRESENCE)
gs.subscribe(topic)
say({ event: 'listening', peer_id: node.peerId.toString() })

const stop = async (code) => {
  try {
    await node.stop()
  } finally {
    process.exit(code)
  }
}
process.stdin.on('end', () => stop(0))
process.stdin.on('close', () => stop(0))
process.stdin.resume()
setTimeout(() => {
  say({ event: 'error', message: `deadline of ${deadlineMs} ms passed` })
  stop(2)
}, deadlineMs).unref()

try {
  const conn = await node.dial(addr, { signal: AbortSignal.timeout(30000) })
  starling = conn.remotePeer
} catch (e) {
  say({ event: 'error', message: `dial ${addr}: ${e}` })
  await stop(1)
}

// Ready once the node's subscription to the project topic arrived here.
for (let i = 0; ; i++) {
  if (gs.getSubscribers(topic).some((p) => p.equals(starling))) break
  if (i >= 300) {
    say({ event: 'error', message: 'the node never subscribed to the topic' })
    await stop(1)
  }
  await sleep(100)
}
say({ event: 'ready' })

setInterval(() => {
  say({
    event: 'score',
    node: gs.getScore(starling.toString()),
    mesh: gs.getMeshPeers(topic).includes(starling.toString())
  })
}, 5000)

// Ask the DHT for the peers closest to a random key until the node answers (it is our only
// peer, so it answers or nobody does). Bounded: 30 tries, 10 s each.
for (let i = 0; i < 30; i++) {
  const key = crypto.getRandomValues(new Uint8Array(32))
  let answered = false
  try {
    for await (const ev of dht.getClosestPeers(key, { signal: AbortSignal.timeout(10000) })) {
      if (ev.name === 'PEER_RESPONSE' && ev.from.equals(starling)) {
        say({ event: 'dht_answered', closer: ev.closer.length })
        answered = true
      }
    }
  } catch (e) {
    say({ event: 'dht_retry', message: String(e) })
  }
  if (answered) break
  await sleep(1000)
}
