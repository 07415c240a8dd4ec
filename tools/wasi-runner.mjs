// Cargo test runner for wasm32-wasip1: runs a test binary under Node's WASI,
// so the filters' logic is tested compiled to wasm, as Envoy's VM runs it.
// Usage (set by the Makefile): CARGO_TARGET_WASM32_WASIP1_RUNNER="node tools/wasi-runner.mjs"
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [, , wasmPath, ...args] = process.argv;
const wasi = new WASI({
  version: 'preview1',
  args: [wasmPath, ...args],
  env: { RUST_TEST_THREADS: '1', RUST_BACKTRACE: process.env.RUST_BACKTRACE ?? '0' },
  preopens: { '/': '/' },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(wasmPath));
// The proxy-wasm glue is linked into the test binaries and imports Envoy's
// host functions; tests never call them, and one that did fails loudly here.
const imports = wasi.getImportObject();
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.kind !== 'function' || imports[imp.module]?.[imp.name]) continue;
  imports[imp.module] ??= {};
  imports[imp.module][imp.name] = () => {
    throw new Error(`host function ${imp.module}.${imp.name} is not available in tests`);
  };
}
const instance = await WebAssembly.instantiate(module, imports);
// proxy_wasm::main! also exports `_initialize`, which Node's WASI refuses next
// to `_start`: hand it only what a command needs.
const { _start, memory } = instance.exports;
process.exitCode = wasi.start({ exports: { _start, memory } });
