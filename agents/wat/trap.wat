;; trap (hostile): says so on stderr, then divides an integer by zero (a RuntimeError).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\20\00\00\00\1b\00\00\00")
  (data (i32.const 32) "trap: dividing by zero now\n")
  (func (export "_start")
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; the divisor is read from memory (zero), so no tool can fold the division away
    (drop (i32.div_u (i32.const 1) (i32.load (i32.const 128))))))
