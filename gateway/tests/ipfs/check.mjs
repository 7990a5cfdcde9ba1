// Checks a CAR from the gateway with IPFS's own JS stack, independent of
// crowdstore's Rust code: every block's bytes must hash to its CID (SHA2-256
// or BLAKE3), then ipfs-unixfs-exporter reads the file (or a range of it)
// from those blocks alone and it must equal the original file's bytes.
//
//   node check.mjs CAR ROOT ORIGINAL [OFFSET LENGTH]
//
// Prints one JSON line: {"ok":true,"blocks":N,"bytes":M,"roots":[...]} or
// {"ok":false,"error":"..."}.
import fs from 'node:fs'
import { CarBlockIterator } from '@ipld/car'
import { exporter } from 'ipfs-unixfs-exporter'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { blake3 } from '@noble/hashes/blake3.js'

const [carPath, rootText, originalPath, offsetText, lengthText] = process.argv.slice(2)

function equal (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

async function digestOf (code, bytes) {
  if (code === 0x12) return (await sha256.digest(bytes)).digest
  if (code === 0x1e) return blake3(bytes)
  throw new Error(`unsupported multihash 0x${code.toString(16)}`)
}

async function main () {
  const root = CID.parse(rootText)
  const store = new MemoryBlockstore()
  const blocks = await CarBlockIterator.fromIterable(fs.createReadStream(carPath))
  const roots = (await blocks.getRoots()).map(String)
  let n = 0
  for await (const { cid, bytes } of blocks) {
    const want = cid.multihash.digest
    const got = await digestOf(cid.multihash.code, bytes)
    if (!equal(want, got)) throw new Error(`block ${cid} does not hash to its CID`)
    await store.put(cid, bytes)
    n++
  }
  const original = fs.readFileSync(originalPath)
  const offset = offsetText === undefined ? 0 : Number(offsetText)
  const length = lengthText === undefined ? original.length - offset : Number(lengthText)
  const entry = await exporter(root, store)
  if (entry.type !== 'file' && entry.type !== 'raw') throw new Error(`root is a ${entry.type}, not a file`)
  if (Number(entry.size) !== original.length) throw new Error(`the DAG says ${entry.size} bytes, the file has ${original.length}`)
  const parts = []
  for await (const chunk of entry.content({ offset, length })) parts.push(chunk)
  const got = Buffer.concat(parts)
  const want = original.subarray(offset, offset + length)
  if (!equal(got, want)) throw new Error(`the exported bytes ${offset}+${length} differ from the file's (${got.length} vs ${want.length} bytes)`)
  console.log(JSON.stringify({ ok: true, blocks: n, bytes: got.length, roots }))
}

main().catch(e => {
  console.log(JSON.stringify({ ok: false, error: String(e && e.message || e) }))
  process.exitCode = 1
})
