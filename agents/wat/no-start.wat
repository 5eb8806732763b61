;; no-start (hostile): a WASI reactor (exports _initialize, not _start). The
;; registry must refuse it (WASM_MISSING_EXPORT).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "run") (result i32) (i32.const 0)))
