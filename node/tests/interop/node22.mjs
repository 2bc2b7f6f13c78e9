// js-libp2p 3 declares no engines but calls two things Node.js 20 lacks (both arrived in
// Node.js 22): Promise.withResolvers (libp2p, yamux, noise, mortice, it-queue...) and
// Set.prototype.difference (kad-dht's closest-peers tracking). The test runs on the machine's
// Node.js 20, so these stand-ins, with the specified behaviour, load before libp2p; on a Node.js
// that has them they do nothing.

if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    }
  })
}

if (typeof Set.prototype.difference !== 'function') {
  Object.defineProperty(Set.prototype, 'difference', {
    configurable: true,
    writable: true,
    value: function difference (other) {
      const out = new Set()
      for (const v of this) {
        if (!other.has(v)) out.add(v)
      }
      return out
    }
  })
}
