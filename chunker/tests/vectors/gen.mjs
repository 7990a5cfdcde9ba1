// Regenerates the UnixFS known-answer vectors in this folder with the reference
// JS importer (ipfs-unixfs-importer, profile "unixfs-v1-2025"), an
// implementation independent of ours. Not run by the test suite: the output
// files are committed.
//
//   cd chunker/tests/vectors && npm install --no-save ipfs-unixfs-importer \
//     @ipld/dag-pb @ipld/car multiformats @noble/hashes blockstore-core && node gen.mjs
//
// fastcdc cases take their chunk lengths from fastcdc-cases.json (written by
// `cargo run -p crowd-chunker --example fastcdc_cases`): the boundaries are the
// fastcdc crate's, the DAG over them is built here.
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'
import * as dagPb from '@ipld/dag-pb'
import * as raw from 'multiformats/codecs/raw'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { blake3 } from '@noble/hashes/blake3.js'
import { CarWriter } from '@ipld/car'
import fs from 'node:fs'

// xorshift32, little-endian words: the same generator as tests/vectors.rs.
export function testData (size, seed) {
  const out = new Uint8Array(size)
  let x = seed >>> 0
  for (let i = 0; i < size; i += 4) {
    x ^= (x << 13) >>> 0; x >>>= 0
    x ^= x >>> 17
    x ^= (x << 5) >>> 0; x >>>= 0
    for (let b = 0; b < 4 && i + b < size; b++) out[i + b] = (x >>> (8 * b)) & 0xff
  }
  return out
}

const MiB = 1024 * 1024
const fixedCases = [
  { name: 'empty', size: 0, chunkSize: MiB, maxLinks: 1024 },
  { name: 'one-byte', size: 1, chunkSize: MiB, maxLinks: 1024 },
  { name: 'exactly-one-chunk', size: MiB, chunkSize: MiB, maxLinks: 1024 },
  { name: 'one-chunk-plus-one', size: MiB + 1, chunkSize: MiB, maxLinks: 1024 },
  { name: 'default-multi-chunk', size: 3 * MiB + 12345, chunkSize: MiB, maxLinks: 1024 },
  { name: 'four-levels', size: 256 * 18 + 100, chunkSize: 256, maxLinks: 3 },
  { name: 'full-tree', size: 1024 * 16, chunkSize: 1024, maxLinks: 4 },
  { name: 'full-tree-plus-one', size: 1024 * 16 + 1, chunkSize: 1024, maxLinks: 4 },
  { name: 'small-chunks-default-links', size: 5000, chunkSize: 1000, maxLinks: 1024 },
]

function lengthsChunker (lengths) {
  return async function * (source) {
    const parts = []
    for await (const b of source) parts.push(b)
    const all = Buffer.concat(parts)
    let off = 0
    for (const len of lengths) { yield all.subarray(off, off + len); off += len }
    if (off !== all.length) throw new Error('lengths do not cover the data')
  }
}

// blockstore-core may hand back a Uint8Array, a list or an async stream of parts
async function getBytes (bs, cid) {
  let v = bs.get(cid)
  if (v instanceof Promise) v = await v
  if (v instanceof Uint8Array) return v
  if (typeof v.subarray === 'function') return v.subarray()
  const parts = []
  for await (const p of v) parts.push(p instanceof Uint8Array ? p : p.subarray())
  return new Uint8Array(Buffer.concat(parts))
}

async function importSha256 (data, chunker, maxLinks) {
  const bs = new MemoryBlockstore()
  let root
  for await (const entry of importer([{ content: data }], bs, {
    profile: 'unixfs-v1-2025', chunker, layout: balanced({ maxChildrenPerNode: maxLinks })
  })) root = entry.cid
  return { root, bs }
}

// Re-address a sha2-256 DAG with BLAKE3 (same layout, same sizes: both
// multihashes are 34 bytes), decoding and re-encoding every dag-pb node.
async function rehashBlake3 (cid, bs, out) {
  const bytes = await getBytes(bs, cid)
  let block
  if (cid.code === raw.code) {
    block = bytes
  } else {
    const node = dagPb.decode(bytes)
    const Links = []
    for (const l of node.Links) Links.push({ ...l, Hash: await rehashBlake3(l.Hash, bs, out) })
    block = dagPb.encode({ Data: node.Data, Links })
  }
  const c = CID.createV1(cid.code, Digest.create(0x1e, blake3(block)))
  out.set(c.toString(), block)
  return c
}

async function collect (root, get) {
  // depth-first pre-order: the order crowd writes CAR blocks in
  const blocks = []
  async function walk (cid) {
    const bytes = await get(cid)
    blocks.push({ cid, bytes })
    if (cid.code === dagPb.code) for (const l of dagPb.decode(bytes).Links) await walk(l.Hash)
  }
  await walk(root)
  return blocks
}

async function writeCar (path, root, blocks) {
  const { writer, out } = CarWriter.create([root])
  const chunks = []
  const done = (async () => { for await (const c of out) chunks.push(c) })()
  for (const b of blocks) await writer.put(b)
  await writer.close()
  await done
  fs.writeFileSync(path, Buffer.concat(chunks))
}

const vectors = []
async function run (c, chunker, extra) {
  const data = testData(c.size, c.seed ?? 0x2545F491)
  const { root, bs } = await importSha256(data, chunker, c.maxLinks)
  const shaBlocks = await collect(root, (cid) => getBytes(bs, cid))
  const b3 = new Map()
  const b3root = await rehashBlake3(root, bs, b3)
  const b3Blocks = await collect(b3root, async (cid) => b3.get(cid.toString()))
  for (const [hash, r, blocks] of [['sha2-256', root, shaBlocks], ['blake3', b3root, b3Blocks]]) {
    const v = { name: c.name, size: c.size, seed: c.seed ?? 0x2545F491, chunker: c.chunker ?? 'fixed',
      chunk_size: c.chunkSize, max_links: c.maxLinks, hash, root: r.toString(), blocks: blocks.length, ...extra }
    if (c.size <= 64 * 1024) {
      v.car = `${c.name}.${hash}.car`
      await writeCar(v.car, r, blocks)
    }
    vectors.push(v)
  }
}

for (const c of fixedCases) await run(c, fixedSize({ chunkSize: c.chunkSize }), {})
if (fs.existsSync('fastcdc-cases.json')) {
  for (const c of JSON.parse(fs.readFileSync('fastcdc-cases.json'))) {
    await run({ ...c, chunkSize: c.chunk_size, maxLinks: c.max_links, chunker: 'fastcdc' }, lengthsChunker(c.lengths), {})
  }
}
fs.writeFileSync('unixfs.json', JSON.stringify(vectors, null, 1) + '\n')
console.log(`wrote ${vectors.length} vectors`)
