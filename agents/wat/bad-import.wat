;; bad-import (hostile): imports env.fetch besides WASI. The registry must refuse
;; it (WASM_FORBIDDEN_IMPORT) before it reaches a node.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "env" "fetch" (func $fetch (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "http://169.254.169.254/")
  (func (export "_start")
    (drop (call $fetch (i32.const 64) (i32.const 23)))))
